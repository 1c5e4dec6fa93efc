"""``declic flows check``: load every flow and render it in every locale and variant.

A flow passes only when its file validates, its sample event is valid, and each locale has
its templates and renders a subject and a body from the sample — the same code path a
worker uses, so a catalogue that passes here renders in production.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from events.envelope import parse_event
from flows.loader import Catalogue, CatalogueInvalid, FlowProblem, load_catalogue
from flows.model import Category, Flow
from workers.rendering import RenderedEmail, Renderer, RenderError, build_context

REQUIRED_FILES = ("subject.txt", "preheader.txt", "body.html")


@dataclass(frozen=True)
class CheckReport:
    catalogue: Catalogue | None
    problems: list[FlowProblem]
    rendered: int

    @property
    def ok(self) -> bool:
        return not self.problems


def render_sample(
    renderer: Renderer, flow: Flow, locale: str, variant: str, step_name: str | None = None
) -> RenderedEmail:
    """Render a flow's sample event, as the worker would, for one locale and variant."""
    event = parse_event(flow.sample)
    step = flow.step(step_name) if step_name else flow.all_steps[0]
    contact = event.contact.model_dump(mode="json")
    context = build_context(event.to_json(), contact, "00000000-0000-4000-8000-000000000000")
    return renderer.render(flow, step, locale=locale, variant=variant, context=context)


def _flow_problems(flow: Flow, renderer: Renderer, templates_dir: Path) -> tuple[list[FlowProblem], int]:
    file = f"{flow.name}.yaml"
    problems: list[FlowProblem] = []
    rendered = 0
    for step in flow.all_steps:
        template = flow.template_for(step)
        if flow.category is not Category.MARKETING and flow.category_for(step) is Category.MARKETING:
            problems.append(FlowProblem(
                file, f"steps.{step.name}.category",
                f"a {flow.category.value} flow cannot send a marketing step; make it its own marketing flow",
            ))
        for locale in flow.locales:
            folder = templates_dir / template / locale
            missing = [name for name in REQUIRED_FILES if not (folder / name).is_file()]
            if missing:
                problems.append(FlowProblem(file, f"locales.{locale}", f"missing {', '.join(missing)} in {folder}"))
                continue
            for variant in flow.variants:
                try:
                    render_sample(renderer, flow, locale, variant.name, step.name)
                    rendered += 1
                except RenderError as exc:
                    problems.append(FlowProblem(file, f"templates.{locale}.{variant.name}", str(exc)))
    return problems, rendered


def check_catalogue(flows_dir: Path, templates_dir: Path, renderer: Renderer) -> CheckReport:
    """Every problem in the catalogue, each naming the file and the field."""
    try:
        catalogue = load_catalogue(flows_dir)
    except CatalogueInvalid as exc:
        return CheckReport(None, exc.problems, 0)
    problems: list[FlowProblem] = []
    rendered = 0
    for flow in catalogue:
        found, count = _flow_problems(flow, renderer, templates_dir)
        problems += found
        rendered += count
    return CheckReport(catalogue, problems, rendered)
