"""Flows decide: the flow model, loading definitions, conditions and planning sends.

Nothing here does I/O beyond reading flow files; no broker, database or AWS imports.
"""

from flows.loader import Catalogue, CatalogueInvalid, FlowProblem, load_catalogue
from flows.model import Category, Flow, Step
from flows.planning import PlannedSend, choose_variant, plan_sends

__all__ = [
    "Catalogue",
    "CatalogueInvalid",
    "Category",
    "Flow",
    "FlowProblem",
    "PlannedSend",
    "Step",
    "choose_variant",
    "load_catalogue",
    "plan_sends",
]
