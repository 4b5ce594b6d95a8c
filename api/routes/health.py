from fastapi import APIRouter

router = APIRouter(tags=["health"])


@router.get("/healthz", operation_id="healthz")
def healthz() -> dict[str, str]:
    """Alive: the process answers. (Readiness of its dependencies is /readyz.)"""
    return {"status": "ok"}
