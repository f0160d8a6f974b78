"""Your own resources: ``probes=[...]``, each a :class:`Probe` that lists what is checked out right now.

A probe has a ``name`` and a ``snapshot()`` returning a mapping from a key
(any hashable identity: a connection's id, a lock's owner) to a short
description.  A check takes the probe's snapshot when its window opens and
again when it closes; the keys that are new are leaks, after the grace
period, reported and dumped like any other kind.  The grace period polls
``snapshot()`` (doubling from 1 ms up to 20 ms): a probe has no way to say
when something is returned.

Keys are compared by equality, so they must be stable for as long as the
resource is out (an ``id()`` is stable only while the object lives), and
never hold the resource itself if the check should not keep it alive.
"""

from __future__ import annotations

import re
from typing import (
    AbstractSet,
    Any,
    Dict,
    FrozenSet,
    Hashable,
    List,
    Mapping,
    Optional,
    Protocol,
    Sequence,
    Tuple,
    runtime_checkable,
)

from ..records import LITERAL, Frame, shown
from .base import InfoRecord, JsonFields, Kind, TextFields

_DESCRIPTION = "Description "


@runtime_checkable
class Probe(Protocol):
    """A source of resources leakcheck does not know of: whatever ``snapshot()`` lists is in use right now."""

    @property
    def name(self) -> str:
        """Names the probe in reports, dumps and ignore rules: ``Probe 'pool' ...``; a class attribute will do."""

    def snapshot(self) -> Mapping[Any, str]:
        """Every resource in use now: a stable key for each, mapped to what to show for it.

        Called from the checking thread, at least twice per check and
        repeatedly during a grace period; must be cheap and must not block.
        """


class ProbeInfo(InfoRecord):
    """One resource a probe listed, as it was described."""

    _compared = ("probe", "key", "description")
    __slots__ = (*_compared, "frames", "stack")
    _shown = ("probe", "key", "description")
    kind = "probe resource"
    plural = "probe resources"
    header_word = "Probe"
    HEADER = re.compile(rf"Probe (?P<probe>{LITERAL}) key (?P<key>{LITERAL}) \[in use\]:")

    probe: str
    """The probe's ``name``."""
    key: str
    """``repr()`` of the resource's key."""
    description: str
    """What ``snapshot()`` said of it."""
    frames: Tuple[Frame, ...]
    stack: str

    def __init__(self, probe: str, key: str, description: str) -> None:
        self._init(
            probe=probe,
            key=key,
            description=description,
            frames=(),
            stack=f"  {_DESCRIPTION}{shown(description)}\n",
        )

    @property
    def name(self) -> str:  # type: ignore[override]
        """``probe[key]``: what ignore rules by name match."""
        return f"{self.probe}[{self.key}]"

    @property
    def header(self) -> str:
        return f"Probe {self.probe!r} key {self.key!r} [in use]:"

    @property
    def advice(self) -> str:
        return f"give it back to {shown(self.probe)} before the block ends (release, close or return it)"

    def sort_key(self) -> Tuple[Any, ...]:
        return (self.probe, self.key)

    def to_json(self) -> Dict[str, Any]:
        return {"probe": self.probe, "key": self.key, "description": self.description}

    @classmethod
    def from_text(
        cls, header: re.Match[str], frames: Tuple[Frame, ...], details: List[str], fields: TextFields
    ) -> ProbeInfo:
        if frames or len(details) != 1 or not details[0].startswith(_DESCRIPTION):
            raise fields.error("a probe's resource has one line: '  Description ...'")
        description = fields.text(details[0][len(_DESCRIPTION) :])
        return cls(fields.name(header["probe"]), fields.name(header["key"]), description)

    @classmethod
    def from_json(cls, fields: JsonFields) -> ProbeInfo:
        return cls(fields.field("probe", (str,)), fields.field("key", (str,)), fields.field("description", (str,)))


class _Resource:
    """One key of one probe: what the engine holds as a live object.  Hashable by value."""

    __slots__ = ("key", "probe")

    def __init__(self, probe: Probe, key: Hashable) -> None:
        self.probe = probe
        self.key = key

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Resource) and other.probe is self.probe and other.key == self.key

    def __hash__(self) -> int:
        return hash((id(self.probe), self.key))


def _listing(probe: Probe) -> Mapping[Hashable, str]:
    listing = probe.snapshot()
    if not isinstance(listing, Mapping):
        raise TypeError(f"probe {probe.name!r}: snapshot() must return a mapping, not {type(listing).__name__}")
    return listing


class ProbesKind(Kind):
    """``probes=[...]``: the option; :meth:`configure` binds it to the probes given."""

    name = "probes"
    info_type = ProbeInfo

    def configure(self, value: object) -> Optional[Kind]:
        if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
            raise TypeError(f"probes must be a list of leakcheck.Probe objects, not {type(value).__name__}")
        names: Dict[str, Probe] = {}
        for probe in value:
            if not isinstance(probe, Probe):
                raise TypeError(
                    f"probes: {probe!r} is not a leakcheck.Probe: it needs a name and a snapshot() method"
                )
            name = probe.name
            if not isinstance(name, str):
                raise TypeError(f"probes: {probe!r}.name must be a str, not {type(name).__name__}")
            if not name:
                raise ValueError(f"probes: {probe!r}.name is empty; a name tells a probe's resources apart in reports")
            if name in names:
                raise ValueError(f"probes: two probes are named {name!r}; names tell them apart in reports")
            names[name] = probe
        return _BoundProbes(tuple(names.values())) if names else None


class _BoundProbes(Kind):
    """The probes of one check."""

    name = "probes"
    info_type = ProbeInfo

    def __init__(self, probes: Tuple[Probe, ...]) -> None:
        self._probes = probes

    # A census holds (name,) for each probe it covered, and (name, key) for each resource: the two
    # never collide, whatever a probe is called and whatever keys it lists.

    def census(self) -> FrozenSet[Hashable]:
        tokens: List[Hashable] = [(probe.name,) for probe in self._probes]
        for probe in self._probes:
            tokens.extend((probe.name, key) for key in _listing(probe))
        return frozenset(tokens)

    def new_since(self, before: AbstractSet[Hashable]) -> AbstractSet[Hashable]:
        missing = [probe.name for probe in self._probes if (probe.name,) not in before]
        if missing:
            raise ValueError(
                f"the baseline was taken without the probe {missing[0]!r}: give the same probes to "
                "snapshot() and find_leaks()"
            )
        return self.census() - before

    def resolve(self, tokens: AbstractSet[Hashable]) -> List[Any]:
        by_name = {probe.name: probe for probe in self._probes}
        found = [
            _Resource(by_name[token[0]], token[1])
            for token in tokens
            if isinstance(token, tuple) and len(token) == 2 and token[0] in by_name
        ]
        return self.alive_among(found)

    def live(self) -> List[Any]:
        return [_Resource(probe, key) for probe in self._probes for key in _listing(probe)]

    def identity(self, obj: Any) -> Optional[Hashable]:
        resource: _Resource = obj
        return (resource.probe.name, resource.key)  # another check's probe object of the same name: the same resource

    def is_alive(self, obj: Any) -> bool:
        resource: _Resource = obj
        return resource.key in _listing(resource.probe)

    def alive_among(self, objs: Sequence[Any]) -> List[Any]:
        listings: Dict[int, Mapping[Hashable, str]] = {}  # one snapshot() per probe, however many keys
        alive = []
        for resource in objs:
            probe = resource.probe
            listing = listings.get(id(probe))
            if listing is None:
                listing = listings[id(probe)] = _listing(probe)
            if resource.key in listing:
                alive.append(resource)
        return alive

    def describe(self, objs: Sequence[Any]) -> List[ProbeInfo]:
        listings: Dict[str, Mapping[Hashable, str]] = {}
        infos = []
        for resource in objs:
            probe = resource.probe
            if probe.name not in listings:
                listings[probe.name] = _listing(probe)
            description = listings[probe.name].get(resource.key, "(given back)")
            infos.append(ProbeInfo(probe.name, repr(resource.key), str(description)))
        return infos


KIND = ProbesKind()
