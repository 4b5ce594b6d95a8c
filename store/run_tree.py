"""Run trees: a run and the children it made, and what that tree allows.

A run token may act on its run and every run below it, and a tree may hold only so many
runs (the cluster's ``children`` budget). Children made by ``child_run()`` carry their
parent's id as a prefix; submitted children do not, so the recorded parents decide.
"""

from __future__ import annotations

from sqlalchemy import func
from sqlmodel import Session, col, select

from protocol.budgets import RunBudgets, over
from store.models import Cluster, Run


def in_tree(session: Session, run_id: str, root_id: str) -> bool:
    """Whether ``run_id`` is ``root_id`` or below it, by the recorded parents (children
    made by ``child_run()`` carry their parent's id as a prefix; submitted ones do not)."""
    current: str | None = run_id
    for _ in range(64):  # children nest a few levels; a cycle cannot be stored, but be safe
        if current == root_id:
            return True
        if current is None:
            return False
        current = session.exec(select(Run.parent_run_id).where(Run.id == current)).first()
    return False


def descendants(session: Session, run_id: str) -> list[str]:
    """The run and every run below it, parents first."""
    found, frontier = [run_id], [run_id]
    while frontier:
        children = list(session.exec(select(Run.id).where(col(Run.parent_run_id).in_(frontier))))
        found += children
        frontier = children
    return found


def child_refusal(session: Session, parent: Run, trees: dict[str, int] | None = None) -> str | None:
    """Why ``parent`` may have no more children (its tree's budget), or None. ``trees``
    keeps the count of each tree met, so a batch of children counts its tree once."""
    root = parent.root_run_id or parent.id
    cluster = session.get(Cluster, parent.cluster) if parent.cluster else None
    budgets = RunBudgets.of(cluster.budgets if cluster else None)
    trees = {} if trees is None else trees
    if root not in trees:
        trees[root] = session.exec(select(func.count()).where(Run.root_run_id == root)).one()
    if trees[root] >= budgets.children:
        return f"run {root} is {over(budgets, 'children')}"
    return None
