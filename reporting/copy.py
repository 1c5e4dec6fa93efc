"""What a flow's email says at the top of the inbox: its subject and preheader per variant.

Sends record the rendered subject but not the preheader (``sends`` has no column for it), so
the preheader is *derived*: the flow's preheader template for that variant and locale,
rendered with the flow's own sample event. For most flows the preheader is fixed text or
depends only on the brand; where it interpolates the customer's data, the sample's values
stand in — the insight says so (``preheader_source``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import lru_cache
from pathlib import Path

PreheaderLookup = Callable[[str, str, str], str | None]


def template_preheaders(flows_dir: Path, templates_dir: Path, brand: Mapping[str, str]) -> PreheaderLookup:
    """A (flow, variant, locale) → preheader lookup rendering the templates, cached."""
    from events.envelope import parse_event
    from flows.loader import load_catalogue
    from workers.rendering import Renderer, RenderError, build_context

    catalogue = load_catalogue(flows_dir)
    renderer = Renderer(templates_dir, dict(brand))

    @lru_cache(maxsize=1024)
    def lookup(flow: str, variant: str, locale: str) -> str | None:
        definition = catalogue.flows.get(flow)
        if definition is None:
            return None
        sample = parse_event(definition.sample)
        context = build_context(sample.to_json(), sample.contact.model_dump(mode="json"), "report")
        try:
            email = renderer.render(
                definition, definition.all_steps[0],
                locale=None if locale == "unknown" else locale,
                variant=variant if variant != "unknown" else definition.variants[0].name,
                context=context,
            )
        except RenderError:
            return None
        return email.preheader

    return lookup
