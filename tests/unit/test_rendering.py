"""Rendering: every catalogue flow in every locale and variant, and the template safety rules."""

from __future__ import annotations

import copy
import re
from pathlib import Path

import pytest

from declic.checks import check_catalogue, render_sample
from declic.settings import REPO_ROOT
from events import parse_event
from flows import Catalogue, load_catalogue
from flows.model import Flow
from workers.rendering import Renderer, RenderError, build_context, locale_candidates

CATALOGUE = load_catalogue(REPO_ROOT / "flows" / "catalogue")
CASES = [
    (f.name, s.name, loc, v.name) for f in CATALOGUE for s in f.all_steps for loc in f.locales for v in f.variants
]


@pytest.mark.parametrize(("flow", "step", "locale", "variant"), CASES)
def test_every_flow_renders_in_every_locale(
    flow: str, step: str, locale: str, variant: str, renderer: Renderer
) -> None:
    """Each flow × step × locale × variant renders a one-line subject, a preheader, HTML with inlined CSS and text."""
    email = render_sample(renderer, CATALOGUE[flow], locale, variant, step)
    assert email.locale == locale
    assert email.subject and "\n" not in email.subject
    assert email.preheader
    assert email.preheader in email.html  # the hidden preview text
    assert 'style="' in email.html  # CSS inlined for email clients
    assert len(email.text.strip()) > 40
    assert email.preheader not in email.text.splitlines()[0]


def test_the_shipped_catalogue_passes_the_check(renderer: Renderer) -> None:
    """`declic flows check` logic finds no problem in the shipped catalogue."""
    report = check_catalogue(REPO_ROOT / "flows" / "catalogue", REPO_ROOT / "templates", renderer)
    assert report.problems == []
    assert report.rendered == len(CASES)


def context_for(flow: Flow, **data_changes: object) -> dict[str, object]:
    event = parse_event(flow.sample)
    event_json = event.to_json()
    event_json["data"] = {**event_json["data"], **data_changes}
    return build_context(event_json, event.contact.model_dump(mode="json"), "s-1")


def test_locale_falls_back_to_language_then_default(catalogue: Catalogue, renderer: Renderer) -> None:
    """fr-CA uses the French templates; an unknown language uses the flow's default."""
    flow = catalogue["order_confirmation"]
    assert locale_candidates("fr-CA", flow) == ["fr", "en"]
    assert locale_candidates("de-AT", flow) == ["en"]
    step = flow.all_steps[0]
    assert renderer.render(flow, step, locale="fr-CA", variant="a", context=context_for(flow)).locale == "fr"
    assert renderer.render(flow, step, locale="de", variant="a", context=context_for(flow)).locale == "en"


def test_money_and_dates_follow_the_locale(catalogue: Catalogue, renderer: Renderer) -> None:
    """Amounts and dates are formatted the French way in French and the English way in English."""
    flow = catalogue["purchase_confirmation"]
    step = flow.all_steps[0]
    french = renderer.render(flow, step, locale="fr", variant="a", context=context_for(flow))
    english = renderer.render(flow, step, locale="en", variant="a", context=context_for(flow))
    total = parse_event(flow.sample).data["total"]
    whole, cents = total.split(".")
    assert f"{whole},{cents}\u00a0€" in french.text or f"{whole},{cents}\u202f€" in french.text
    assert f"€{whole}.{cents}" in english.text


def test_data_is_escaped_and_never_evaluated(catalogue: Catalogue, renderer: Renderer) -> None:
    """HTML in data is escaped, Jinja2 syntax in data stays text, and newlines cannot reach the subject."""
    flow = catalogue["generic_notification"]
    hostile = context_for(
        flow,
        headline="<script>alert(1)</script>{{ 7*7 }}\r\nBcc: victim@example.org",
        paragraphs=["{% for x in range(3) %}boom{% endfor %}", "<img src=x onerror=alert(1)>"],
    )
    email = renderer.render(flow, flow.all_steps[0], locale="en", variant="a", context=hostile)
    assert "<script>" not in email.html and "&lt;script&gt;" in email.html
    assert "<img src=x" not in email.html
    assert "{{ 7*7 }}" in email.html.replace("&#123;", "{") or "{{ 7*7 }}" in email.text
    assert "49" not in email.subject
    assert "\n" not in email.subject and "\r" not in email.subject


def test_missing_data_is_a_render_error_not_a_blank(catalogue: Catalogue, renderer: Renderer) -> None:
    """A template reading data the event lacks fails loudly, naming the template."""
    flow = catalogue["shipping_confirmation"]
    event = parse_event(flow.sample).to_json()
    event["data"] = {}
    context = build_context(event, {"id": "c", "email": "a@example.org"}, "s-1")
    with pytest.raises(RenderError, match="shipping_confirmation/en/"):
        renderer.render(flow, flow.all_steps[0], locale="en", variant="a", context=context)


def test_templates_cannot_escape_the_sandbox(tmp_path: Path, catalogue: Catalogue) -> None:
    """A template reaching for Python internals fails instead of running."""
    flow = catalogue["welcome"]
    folder = tmp_path / "welcome" / "en"
    folder.mkdir(parents=True)
    (folder / "subject.txt").write_text("{{ ''.__class__.__mro__[1].__subclasses__() }}")
    (folder / "preheader.txt").write_text("p")
    (folder / "body.html").write_text("<p>hi</p>")
    with pytest.raises(RenderError, match=r"SecurityError|unsafe"):
        Renderer(tmp_path, {}).render(flow, flow.all_steps[0], locale="en", variant="a", context=context_for(flow))


def test_without_body_txt_the_text_part_is_derived_from_the_html(tmp_path: Path, catalogue: Catalogue) -> None:
    """A flow with only body.html gets a readable text part: its words and link targets, not the
    hidden preheader or the markup."""
    flow = catalogue["welcome"]
    folder = tmp_path / "welcome" / "en"
    folder.mkdir(parents=True)
    (folder / "subject.txt").write_text("Welcome")
    (folder / "preheader.txt").write_text("Hidden teaser")
    (folder / "body.html").write_text(
        '<div style="display:none;max-height:0">{{ preheader }}</div>'
        '<h1>Welcome</h1><p>Please <a href="{{ data.confirm_url }}">confirm your address</a>.</p>'
    )
    email = Renderer(tmp_path, {}).render(flow, flow.all_steps[0], locale="en", variant="a",
                                          context=context_for(flow))
    assert "Welcome" in email.text and "confirm your address" in email.text
    assert flow.sample["data"]["confirm_url"] in email.text
    assert "Hidden teaser" not in email.text and "<" not in email.text


def test_variant_b_has_its_own_subject(renderer: Renderer) -> None:
    """Flows with two variants render a different subject for variant b."""
    two = [f for f in CATALOGUE if len(f.variants) > 1]
    assert two, "the catalogue should ship at least one A/B test"
    for flow in two:
        a = render_sample(renderer, flow, flow.default_locale, "a")
        b = render_sample(renderer, flow, flow.default_locale, "b")
        assert a.subject != b.subject


def test_flows_check_names_file_and_field_of_a_broken_template(tmp_path: Path, templates_dir: Path) -> None:
    """A flow whose French template is missing fails the check, naming the file and the locale."""
    flows_dir = tmp_path / "flows"
    flows_dir.mkdir()
    source = copy.deepcopy(CATALOGUE["welcome"].model_dump(mode="json", exclude_none=True))
    source["template"] = "no_such_template"
    source.pop("freshness", None)
    import yaml

    (flows_dir / "welcome.yaml").write_text(yaml.safe_dump(source, allow_unicode=True))
    report = check_catalogue(flows_dir, templates_dir, Renderer(templates_dir, {}))
    assert not report.ok
    found = {(p.file, p.field) for p in report.problems}
    assert found >= {("welcome.yaml", "locales.en"), ("welcome.yaml", "locales.fr")}


def test_reset_and_unsubscribe_links_escape_click_tracking(catalogue: Catalogue, renderer: Renderer) -> None:
    """Password-reset links and unsubscribe links carry ses:no-track, so scanners cannot spend them via SES."""
    reset = render_sample(renderer, catalogue["password_reset"], "en", "a")
    anchors = re.findall(r"<a\b[^>]*>", reset.html)
    assert anchors and all("ses:no-track" in a for a in anchors)
    reset_url = parse_event(catalogue["password_reset"].sample).data["reset_url"]
    assert any(reset_url in a for a in anchors)

    survey = catalogue["survey"]
    context = context_for(survey)
    context["links"] = {"unsubscribe": "https://mail.example.com/v1/unsubscribe/tok"}
    email = renderer.render(survey, survey.all_steps[0], locale="en", variant="a", context=context)
    [unsubscribe] = [a for a in re.findall(r"<a\b[^>]*>", email.html) if "/v1/unsubscribe/" in a]
    assert "ses:no-track" in unsubscribe
    assert any("ses:no-track" not in a for a in re.findall(r"<a\b[^>]*>", email.html))  # others stay tracked
