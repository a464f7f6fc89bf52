"""Vision preprocessing and towers chosen by name, CNN and ViT alike."""

import cv2
import numpy as np
import pytest
import torch

from encoders.vision import InputError, VisionConfig, VisionTower, load_image, preprocess, to_rgb, top_classes


def test_preprocess_resizes_any_shape_to_the_towers_square():
    for h, w in [(1, 1), (30, 500), (480, 640), (2000, 90)]:
        img = np.full((h, w, 3), 200, np.uint8)
        t = preprocess(img, 224, 0.875, (0.5,) * 3, (0.5,) * 3)
        assert t.shape == (3, 224, 224)
        torch.testing.assert_close(t, torch.full((3, 224, 224), (200 / 255 - 0.5) / 0.5))


def test_bgr_gray_and_rgba_arrays_become_rgb():
    bgr = np.zeros((4, 4, 3), np.uint8)
    bgr[..., 0] = 255  # blue in OpenCV order
    assert to_rgb(bgr, "BGR")[0, 0].tolist() == [0, 0, 255]
    assert to_rgb(np.full((4, 4), 9, np.uint8)).shape == (4, 4, 3)
    assert to_rgb(np.zeros((4, 4, 4), np.uint8)).shape == (4, 4, 3)
    assert to_rgb(np.ones((2, 2, 3), np.float32)).max() == 255


def test_image_files_load_and_bad_ones_get_one_line_reasons(tmp_path):
    good = tmp_path / "red.png"
    img = np.zeros((8, 6, 3), np.uint8)
    img[..., 2] = 255  # red in BGR
    cv2.imwrite(str(good), img)
    assert load_image(good)[0, 0].tolist() == [255, 0, 0]
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(good.read_bytes()[:40])
    text = tmp_path / "notes.png"
    text.write_text("hello")
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    for path, words in {tmp_path / "nope.png": "no such", corrupt: "not an image", text: "not an image",
                        empty: "empty"}.items():
        with pytest.raises(InputError, match=words):
            load_image(path)


def test_huge_images_are_refused_before_they_reach_the_tower():
    with pytest.raises(InputError, match="megapixels"):
        to_rgb(np.broadcast_to(np.zeros(1, np.uint8), (12000, 12000, 3)))


@pytest.mark.parametrize("name,grid", [("test_efficientnet", (5, 5)), ("test_vit", (10, 10))])
def test_cnn_and_vit_towers_give_patch_features_and_logits(name, grid):
    tower = VisionTower(VisionConfig(name))
    assert tower.grid == grid
    with torch.no_grad():
        feats, logits = tower(tower.pixels([np.zeros((50, 80, 3), np.uint8), np.zeros((300, 20, 3), np.uint8)]))
    assert feats.shape == (2, grid[0] * grid[1], tower.feature_dim)
    assert logits.shape == (2, tower.num_classes)


def test_a_vit_loads_the_moment_a_checkpoint_file_is_given(tmp_path):
    import timm
    from safetensors.torch import save_file

    torch.manual_seed(1)
    src = timm.create_model("test_vit")
    save_file(src.state_dict(), str(tmp_path / "vit.safetensors"))
    torch.save({"state_dict": src.state_dict()}, tmp_path / "vit.pth")
    x = torch.randn(1, 3, 160, 160)
    for ckpt in ("vit.safetensors", "vit.pth"):
        tower = VisionTower(VisionConfig("test_vit", str(tmp_path / ckpt)))
        with torch.no_grad():
            torch.testing.assert_close(tower(x)[1], src.eval()(x))
    assert tower.num_prefix_tokens == 1  # the class token is not a patch


def test_top_classes_are_sorted_probabilities():
    top = top_classes(torch.tensor([0.0, 3.0, 1.0]), ["a", "b", "c"], k=2)
    assert [t[0] for t in top] == ["b", "c"] and top[0][1] > top[1][1] and sum(p for _, p in top) < 1
