"""RunDetails: the Studio's run page inside a notebook."""

from __future__ import annotations

from types import SimpleNamespace

from runyard.widgets import RunDetails


def test_run_details_embeds_the_studio_run_page(capsys) -> None:  # type: ignore[no-untyped-def]
    run = SimpleNamespace(id="e_1_ab", get_portal_url=lambda: "http://127.0.0.1:8642/runs/e_1_ab")
    details = RunDetails(run)
    markup = details._repr_html_()
    assert 'src="http://127.0.0.1:8642/runs/e_1_ab?embed=1"' in markup
    assert 'href="http://127.0.0.1:8642/runs/e_1_ab"' in markup
    assert details.get_widget_data() == {"run_id": "e_1_ab", "url": run.get_portal_url()}
