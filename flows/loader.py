"""Loading flow definitions from a directory into a :class:`Catalogue`.

Every problem is reported at once, each naming its file and field, so ``declic flows check``
can print them all; a worker refuses to start on any of them.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from pydantic import ValidationError

from events.envelope import EventInvalid, parse_event
from flows.conditions import ConditionError, compile_condition
from flows.model import Flow


@dataclass(frozen=True)
class FlowProblem:
    file: str
    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}: {self.field}: {self.message}"


class CatalogueInvalid(ValueError):
    """One or more flow files are wrong; ``problems`` lists each with file and field."""

    def __init__(self, problems: list[FlowProblem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


@dataclass
class Catalogue:
    """The loaded flows, indexed by name and by trigger event type."""

    flows: dict[str, Flow] = field(default_factory=dict)
    _by_event: dict[str, list[Flow]] = field(default_factory=lambda: defaultdict(list))
    _exits: dict[str, list[Flow]] = field(default_factory=lambda: defaultdict(list))

    def add(self, flow: Flow) -> None:
        self.flows[flow.name] = flow
        if flow.trigger.event is not None:
            self._by_event[flow.trigger.event].append(flow)
        for exit_ in flow.exit:
            self._exits[exit_.event].append(flow)

    def for_event(self, event_type: str) -> list[Flow]:
        return list(self._by_event.get(event_type, ()))

    def exits_for(self, event_type: str) -> list[Flow]:
        """Flows that an event of this type makes a contact leave."""
        return list(self._exits.get(event_type, ()))

    def scheduled(self) -> list[Flow]:
        """Flows started by a date or by inactivity rather than by an event."""
        return [f for f in self.flows.values() if f.trigger.event is None]

    def __getitem__(self, name: str) -> Flow:
        return self.flows[name]

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self.flows.values())

    def __len__(self) -> int:
        return len(self.flows)


def _field(loc: tuple[int | str, ...]) -> str:
    return ".".join(str(p) for p in loc) or "(file)"


def load_flow(path: Path) -> tuple[Flow | None, list[FlowProblem]]:
    """Parse and check one flow file; return the flow or the problems found."""
    name = path.name
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        return None, [FlowProblem(name, "(file)", f"not valid YAML: {exc}")]
    if not isinstance(raw, dict):
        return None, [FlowProblem(name, "(file)", "a flow file holds a mapping of fields")]
    try:
        flow = Flow.model_validate(raw)
    except ValidationError as exc:
        return None, [
            FlowProblem(name, _field(tuple(e["loc"])), e["msg"]) for e in exc.errors(include_url=False)
        ]
    problems: list[FlowProblem] = []
    if flow.name != path.stem:
        problems.append(FlowProblem(name, "name", f"{flow.name!r} must match the file name {path.stem!r}"))
    conditions = [
        ("trigger.condition", flow.trigger.condition),
        *((f"steps.{i}.condition", s.condition) for i, s in enumerate(flow.steps)),
        *((f"exit.{i}.condition", e.condition) for i, e in enumerate(flow.exit)),
    ]
    for where, source in conditions:
        if source is not None:
            try:
                compile_condition(source)
            except ConditionError as exc:
                problems.append(FlowProblem(name, where, str(exc)))
    try:
        parse_event(flow.sample)
    except EventInvalid as exc:
        problems.extend(FlowProblem(name, f"sample.{e['field']}", e["message"]) for e in exc.errors)
    return (None if problems else flow), problems


def load_catalogue(directory: Path) -> Catalogue:
    """Load every ``*.yaml``/``*.yml`` flow in ``directory``; raise CatalogueInvalid on any problem."""
    if not directory.is_dir():
        raise CatalogueInvalid([FlowProblem(str(directory), "(directory)", "no such directory")])
    catalogue = Catalogue()
    problems: list[FlowProblem] = []
    for path in sorted([*directory.glob("*.yaml"), *directory.glob("*.yml")]):
        flow, found = load_flow(path)
        problems.extend(found)
        if flow is not None:
            catalogue.add(flow)
    if problems:
        raise CatalogueInvalid(problems)
    return catalogue
