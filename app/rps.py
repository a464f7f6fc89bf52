"""Rock-paper-scissors against the assistant: plain rules, no model guessing.

Fair play is built in, not promised: each round the assistant draws its move *before* the countdown
and publishes a commitment, SHA-256 of "move:nonce". After the player shows a gesture, the move and
the nonce are revealed and anyone can check them against the commitment (`verify`). The round object
holds the move from the start, and nothing the player does can reach it.

A round: start_round() -> countdown (3, 2, 1, shoot) -> gestures from the frames of a short window
after "shoot" -> the most frequent confident gesture is the player's move -> judged. No gesture seen
(or only "none") voids the round: it is replayed, and the score does not change. Ties are replayed
too; the match is best of N decided rounds.
"""

from __future__ import annotations

import hashlib
import secrets
from collections import Counter
from dataclasses import dataclass, field

MOVES = ("rock", "paper", "scissors")
BEATS = {"rock": "scissors", "scissors": "paper", "paper": "rock"}  # key beats value
COUNTDOWN = ("3", "2", "1", "shoot!")
BEAT_SECONDS = 0.7  # one countdown step
CAPTURE_SECONDS = 0.8  # after "shoot!": frames whose gestures count
MIN_CONFIDENCE = 0.5


def judge(player: str, assistant: str) -> str:
    """'player', 'assistant' or 'tie'."""
    if player not in MOVES or assistant not in MOVES:
        raise ValueError(f"moves must be one of {MOVES}: got {player!r}, {assistant!r}")
    if player == assistant:
        return "tie"
    return "player" if BEATS[player] == assistant else "assistant"


def commitment(move: str, nonce: str) -> str:
    return hashlib.sha256(f"{move}:{nonce}".encode()).hexdigest()


def verify(commit: str, move: str, nonce: str) -> bool:
    return secrets.compare_digest(commit, commitment(move, nonce))


@dataclass(frozen=True)
class Round:
    number: int
    started_at: float
    commit: str  # published at the start
    _move: str = field(repr=False)  # revealed only in the result
    _nonce: str = field(repr=False)

    def countdown(self, now: float) -> str | None:
        """The countdown text at time `now`, or None once the capture window is over."""
        step = int((now - self.started_at) // BEAT_SECONDS)
        if step < len(COUNTDOWN) - 1:
            return COUNTDOWN[max(step, 0)]
        if now - self.shoot_at <= CAPTURE_SECONDS:
            return COUNTDOWN[-1]
        return None

    @property
    def shoot_at(self) -> float:
        return self.started_at + BEAT_SECONDS * (len(COUNTDOWN) - 1)

    def capturing(self, now: float) -> bool:
        return self.shoot_at <= now <= self.shoot_at + CAPTURE_SECONDS


@dataclass
class Result:
    number: int
    player: str | None  # None: no gesture seen; the round is replayed
    assistant: str
    nonce: str
    commit: str
    winner: str | None  # 'player' | 'assistant' | 'tie' | None (void)
    votes: dict[str, int]

    def message(self) -> str:
        if self.player is None:
            return "I couldn't see rock, paper or scissors. Hold your hand up in view, and let's go again."
        said = f"You: {self.player}. Me: {self.assistant} (my move was locked in before you showed yours)."
        if self.winner == "tie":
            return f"{said} A tie, we go again."
        if self.winner == "player":
            return f"{said} {self.player.capitalize()} beats {self.assistant}: you win this round!"
        return f"{said} {self.assistant.capitalize()} beats {self.player}: I win this round."


class Match:
    """Best of `best_of` decided rounds (ties and void rounds are replayed)."""

    def __init__(self, best_of: int = 3, rng: secrets.SystemRandom | None = None):
        if best_of < 1 or best_of % 2 == 0:
            raise ValueError("best_of must be an odd number >= 1")
        self.best_of = best_of
        self.rng = rng or secrets.SystemRandom()
        self.score = {"player": 0, "assistant": 0}
        self.history: list[Result] = []
        self.round: Round | None = None
        self._votes: Counter = Counter()

    @property
    def needed(self) -> int:
        return self.best_of // 2 + 1

    @property
    def winner(self) -> str | None:
        return next((who for who, n in self.score.items() if n >= self.needed), None)

    def start_round(self, now: float) -> Round:
        """Draw and commit the assistant's move; the countdown starts at `now`."""
        if self.winner:
            raise RuntimeError("the match is over; start a new one")
        nonce = secrets.token_hex(16)
        move = self.rng.choice(MOVES)
        self.round = Round(len(self.history) + 1, now, commitment(move, nonce), move, nonce)
        self._votes = Counter()
        return self.round

    def observe(self, gesture: str, confidence: float, now: float) -> None:
        """A gesture seen on a frame at time `now`; only frames inside the capture window count."""
        if self.round and self.round.capturing(now) and gesture in MOVES and confidence >= MIN_CONFIDENCE:
            self._votes[gesture] += 1

    def finish_round(self) -> Result:
        """Judge the round from the gestures seen in its capture window."""
        r = self.round
        if r is None:
            raise RuntimeError("no round in progress")
        player = self._votes.most_common(1)[0][0] if self._votes else None
        winner = judge(player, r._move) if player else None
        if winner in self.score:
            self.score[winner] += 1
        result = Result(r.number, player, r._move, r._nonce, r.commit, winner, dict(self._votes))
        self.history.append(result)
        self.round = None
        return result

    def summary(self) -> str:
        s = f"You {self.score['player']} - {self.score['assistant']} me (best of {self.best_of})"
        if self.winner == "player":
            return s + ". You win the match!"
        if self.winner == "assistant":
            return s + ". I win the match."
        return s + "."
