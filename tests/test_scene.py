"""Photo facts (encoders/scene.py) and their words (fusion/photo_text.py) on drawn scenes with known answers."""

import numpy as np
import pytest

from encoders.hands import synthetic_hand
from encoders.scene import PhotoFacts, colour_names, locate, object_mask, photo_facts, pixel_colours, place
from fusion.photo_text import photo_text

RGB = {"red": (220, 30, 30), "green": (40, 170, 60), "blue": (30, 60, 210), "white": (245, 245, 245),
       "black": (10, 10, 10), "yellow": (240, 220, 40), "grey": (128, 128, 128), "brown": (120, 70, 30),
       "orange": (250, 140, 20), "purple": (130, 50, 180), "pink": (240, 110, 200)}


@pytest.mark.parametrize("name", sorted(RGB))
def test_every_palette_colour_is_named_as_itself(name):
    names = pixel_colours(np.full((4, 4, 3), RGB[name], np.uint8))
    assert set(names) == {name}


def scene(obj: str, background: str, x0: int, y0: int, size: int = 224, side: int = 70) -> tuple[np.ndarray, np.ndarray]:
    img = np.full((size, size, 3), RGB[background], np.uint8)
    img[y0:y0 + side, x0:x0 + side] = RGB[obj]
    cam = np.zeros((7, 7), np.float32)  # the activation map peaks where the object is
    cam[(y0 + side // 2) * 7 // size, (x0 + side // 2) * 7 // size] = 1.0
    return img, cam


@pytest.mark.parametrize("obj,background,x0,y0,where", [
    ("red", "white", 10, 80, "left"), ("yellow", "blue", 140, 10, "top right"),
    ("black", "green", 77, 77, "centre"), ("orange", "grey", 80, 150, "bottom")])
def test_the_main_object_is_placed_and_coloured_against_its_background(obj, background, x0, y0, where):
    img, cam = scene(obj, background, x0, y0)
    facts = photo_facts([("thing", 0.9)], cam, img, (0, 0, 224, 224), (224, 224), 0, [])
    assert facts.where == where
    assert facts.colours[0] == obj
    assert facts.background[0] == background


def test_the_objects_colour_is_what_its_mask_holds_more_of_than_the_rest():
    """A white rocket in a blue sky: the mask holds sky too, but white is what sets it apart."""
    names = np.array(["blue"] * 60 + ["white"] * 40 + ["blue"] * 100)
    inside = np.zeros(200, bool)
    inside[:100] = True
    assert colour_names(names, inside, ~inside)[0] == "white"
    assert colour_names(names, inside)[0] == "blue"  # without the outside, the most covering


def test_a_place_in_a_crop_is_a_place_in_the_whole_picture():
    """The tower sees the centre crop of a wide photo: an object at the crop's right edge is in the centre
    of the picture."""
    mask = np.zeros((224, 224), bool)
    mask[100:120, 200:220] = True
    assert locate(mask, (0, 0, 224, 224), (224, 224)) == "right"
    assert locate(mask, (208, 0, 432, 224), (224, 640)) == "centre"
    assert place(0.1, 0.9) == "bottom left" and place(0.5, 0.5) == "centre"


def test_object_mask_is_the_upper_half_of_the_activation_map():
    cam = np.array([[0.0, 1.0], [0.2, 0.4]], np.float32)
    mask = object_mask(cam, 8)
    assert mask[0, 7] and not mask[7, 0] and 0 < mask.mean() < 0.6
    assert object_mask(np.zeros((2, 2), np.float32), 4).all()  # a flat map: the whole picture


class _Hand:
    def __init__(self, gesture, seed):
        self.landmarks = synthetic_hand(gesture, np.random.default_rng(seed))


def test_hands_are_reported_with_their_gestures():
    img, cam = scene("red", "white", 77, 77)
    facts = photo_facts([("thing", 0.9)], cam, img, (0, 0, 224, 224), (224, 224), 2, [_Hand("rock", 0), _Hand("paper", 1)])
    assert facts.faces == 2 and facts.hands == ("rock", "paper")
    said = photo_text(facts)
    assert "2 people" in said and "2 hands are visible: a fist and an open hand" in said


def test_the_words_hedge_the_class_and_say_what_is_missing():
    facts = PhotoFacts((("tabby", 0.38), ("tiger cat", 0.2), ("lynx", 0.01)), "centre", ("orange", "brown"),
                       ("white",), 0, ())
    said = photo_text(facts)
    assert said.startswith("A photo of a tabby (38%; or a tiger cat 20%). The tabby is in the centre of the "
                           "picture. Its colours are orange and brown. The background is white.")
    assert "lynx" not in said  # under 5%: not named
    assert "no people" in said and "No hands are visible." in said
    assert "an astronaut" in photo_text(PhotoFacts((("astronaut", 0.5),), None, (), (), 0, ()))
