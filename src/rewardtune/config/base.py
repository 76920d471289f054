"""The base of every config section, below ``rewards`` (whose specs are sections) and above
``core`` (whose choice lists the sections use)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, SerializationInfo


class Section(BaseModel):
    """A config section: unknown keys are errors; `learning_rate: .inf` or `weight: .nan` is a
    mistake, not a value."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


PUBLIC = {"public": True}  # model_dump(context=PUBLIC): for files, reports, logs, trackers


def is_public(info: SerializationInfo) -> bool:
    """Whether a dump is a PUBLIC one, where a spec redacts its secrets."""
    return bool((info.context or {}).get("public"))
