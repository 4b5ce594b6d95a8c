"""Interactive runs and run tokens: a run fed by its client (``start_logging``), and the
token a run logs with, minted for its client or for the worker that starts it."""

from __future__ import annotations

from fastapi import APIRouter, status

from api.auth import ALLOW, ActorDep
from api.deps import ServicesDep, SessionDep
from runyard.errors import Conflict
from store import audit, run_listings, tokens
from store import runs as run_service
from store.models import InteractiveRun, InteractiveRunPublic, RunTokenRequest

router = APIRouter(prefix="/runs", tags=["runs"])


@router.post("/{run_id}/run-token", operation_id="issue_run_token", dependencies=[ALLOW.serves_run])
def issue_run_token(
    run_id: str, body: RunTokenRequest, session: SessionDep, services: ServicesDep
) -> dict[str, str]:
    """The worker starting a run asks for the run's own token here, so run tokens never
    travel through the broker (which every worker of every cluster can read)."""
    run = run_service.get_run(session, run_id)
    if run.attempt != body.attempt or run.dispatched_at is None or run.status.is_terminal:
        raise Conflict(f"run {run_id} is not on attempt {body.attempt} with a worker")
    return {"token": tokens.mint_run_token(services.settings.signing_key, run.id, run.attempt)}


@router.post(
    "/interactive",
    status_code=status.HTTP_201_CREATED,
    operation_id="start_interactive_run",
    dependencies=[ALLOW.submit],
)
def start_interactive_run(
    body: InteractiveRun, session: SessionDep, services: ServicesDep, actor: ActorDep
) -> InteractiveRunPublic:
    """``Experiment.start_logging()``: a Running run fed by its client, not by a worker."""
    services.submit_limiter.hit(actor)
    run = run_service.start_interactive(
        session, body.experiment, body.display_name, actor.name, actor.token_id
    )
    audit.record(session, actor, "run.start_logging", run.id)
    session.commit()
    token = tokens.mint_run_token(services.settings.signing_key, run.id, run.attempt)
    public = run_listings.public(run, body.experiment)
    return InteractiveRunPublic(**public.model_dump(), run_token=token)
