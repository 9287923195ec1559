"""Attributes, fixed expression templates and the small vocabulary of the synthetic world.

An expression is always ``"the" + [size] + [colour] + kind + [motion phrase]``, static attributes in the order
size, colour, kind. Two sorts are generated:

* ``static``: no motion phrase; the static attributes alone pick out exactly one object ("the small red square").
* ``motion``: the target has a *twin* (another object with the same kind, colour and size), so only the motion
  phrase tells them apart ("the circle moving to the left", "the small blue square that stops").

Matching is conservative: "moving to the left" matches an object that moves left all the time *and* one that
moves left and then stops, so a generated expression is never ambiguous even to a strict reader.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

ExpressionKind = Literal["static", "motion"]

KINDS: tuple[str, ...] = ("square", "circle", "triangle", "diamond")
#: colour name -> RGB; twins share the exact RGB, so colour never tells twins apart
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 45, 45),
    "green": (40, 175, 60),
    "blue": (45, 85, 225),
    "yellow": (235, 205, 35),
}
SIZES: tuple[str, ...] = ("small", "large")
#: unit vectors (x right, y down) of the four directions
DIRECTIONS: dict[str, tuple[int, int]] = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}
#: motion labels: move the whole clip in a direction, stay still, or move in some direction and then stop
MOTIONS: tuple[str, ...] = ("left", "right", "up", "down", "still", "stops")
MOTION_PHRASES: dict[str, str] = {
    "left": "moving to the left",
    "right": "moving to the right",
    "up": "moving up",
    "down": "moving down",
    "still": "that stays still",
    "stops": "that stops",
}
#: order of the static attributes in an expression
STATIC_FIELDS: tuple[str, ...] = ("size", "colour", "kind")
#: subsets of static attributes an expression may use (the kind is always named)
STATIC_SUBSETS: tuple[tuple[str, ...], ...] = (
    ("kind",),
    ("colour", "kind"),
    ("size", "kind"),
    ("size", "colour", "kind"),
)
TEMPLATES: dict[str, str] = {
    "static": "the [size] [colour] <kind>",
    "motion": "the [size] [colour] <kind> <motion phrase>",
}


def _vocabulary() -> tuple[str, ...]:
    words = {"the", *KINDS, *COLOURS, *SIZES}
    for phrase in MOTION_PHRASES.values():
        words.update(phrase.split())
    return tuple(sorted(words))


#: every word any expression can contain (21 words)
VOCABULARY: tuple[str, ...] = _vocabulary()

_FIELD_OF_WORD: dict[str, str] = {
    **{w: "kind" for w in KINDS},
    **{w: "colour" for w in COLOURS},
    **{w: "size" for w in SIZES},
}


@dataclass(frozen=True)
class Description:
    """What an expression says: some static attributes (``{"colour": "red", "kind": "square"}``) and a motion."""

    attributes: Mapping[str, str]
    motion: str | None = None

    @property
    def kind(self) -> ExpressionKind:
        return "static" if self.motion is None else "motion"

    def text(self) -> str:
        words = ["the"] + [self.attributes[f] for f in STATIC_FIELDS if f in self.attributes]
        if self.motion is not None:
            words.append(MOTION_PHRASES[self.motion])
        return " ".join(words)


def parse_expression(text: str) -> Description:
    """Inverse of `Description.text`; raises ValueError on anything outside the templates."""
    words = text.strip().split()
    if not words or words[0] != "the":
        raise ValueError(f"expression must start with 'the': {text!r}")
    motion = None
    rest = " ".join(words[1:])
    for label, phrase in MOTION_PHRASES.items():
        if rest.endswith(" " + phrase):
            motion, rest = label, rest[: -len(phrase) - 1]
            break
    attributes: dict[str, str] = {}
    for word in rest.split():
        field = _FIELD_OF_WORD.get(word)
        if field is None or field in attributes:
            raise ValueError(f"unexpected word {word!r} in expression {text!r}")
        attributes[field] = word
    if "kind" not in attributes:
        raise ValueError(f"expression names no kind of shape: {text!r}")
    order = [f for f in STATIC_FIELDS if f in attributes]
    if list(attributes) != order:
        raise ValueError(f"attributes out of order (size, colour, kind) in {text!r}")
    return Description(attributes, motion)


def motion_matches(label: str, motion: str, direction: str | None) -> bool:
    """Whether the phrase of motion `label` fits an object with `motion` (and `direction` for 'stops')."""
    if label in DIRECTIONS:
        return motion == label or (motion == "stops" and direction == label)
    return motion == label


def matches(description: Description, static: Mapping[str, str], motion: str, direction: str | None) -> bool:
    """Whether an object with these static attributes and motion fits the description."""
    if any(static[f] != v for f, v in description.attributes.items()):
        return False
    return description.motion is None or motion_matches(description.motion, motion, direction)


def unique_descriptions(
    target: int, statics: Sequence[Mapping[str, str]], motions: Sequence[tuple[str, str | None]], use_motion: bool
) -> list[Description]:
    """Every template filling (in `STATIC_SUBSETS` order) that fits object `target` and no other object."""
    out = []
    for subset in STATIC_SUBSETS:
        desc = Description(
            {f: statics[target][f] for f in STATIC_FIELDS if f in subset},
            motions[target][0] if use_motion else None,
        )
        hits = [i for i in range(len(statics)) if matches(desc, statics[i], *motions[i])]
        if hits == [target]:
            out.append(desc)
    return out
