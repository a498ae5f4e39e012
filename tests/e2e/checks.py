"""Assertions shared by the end-to-end tests: a Phoenix span list against LangChain's run tree."""

from __future__ import annotations

from .apps import RecordedRun

RUN_ID = "langchain.run.id"
RUN_TYPE = "langchain.run.type"
OP_NAME = "gen_ai.operation.name"


def by_run_id(spans: list[dict]) -> dict[str, dict]:
    out: dict[str, dict] = {}
    for span in spans:
        run_id = span["attributes"].get(RUN_ID)
        assert run_id, f"span {span['name']!r} has no {RUN_ID}"
        assert run_id not in out, f"two spans for run {run_id}"
        out[run_id] = span
    return out


def expected_name_ok(run: RecordedRun, span_name: str) -> bool:
    if run.run_type == "chat_model":
        return span_name.startswith("chat ")
    if run.run_type == "tool":
        return span_name == f"execute_tool {run.name}"
    if run.run_type == "retriever":
        return span_name.endswith(run.name)
    return span_name == run.name


def assert_matches_run_tree(spans: list[dict], runs: dict[str, RecordedRun],
                            root_parent_span_id: str | None = None) -> dict[str, dict]:
    """``spans`` (as Phoenix returns them) mirror ``runs`` (as LangChain reported them).

    Same set of runs, one span each, parent span = span of the parent run, one trace, and the
    root span's parent is ``root_parent_span_id`` (None: no parent). Returns run id -> span.
    """
    spans_by_run = by_run_id(spans)
    assert set(spans_by_run) == set(runs), (
        f"runs without span: {[runs[r].name for r in set(runs) - set(spans_by_run)]}; "
        f"spans without run: {[spans_by_run[r]['name'] for r in set(spans_by_run) - set(runs)]}"
    )
    run_of_span = {s["context"]["span_id"]: rid for rid, s in spans_by_run.items()}
    assert len({s["context"]["trace_id"] for s in spans}) == 1, "runs of one invoke split over traces"
    for run_id, run in runs.items():
        span = spans_by_run[run_id]
        if run.parent_run_id is None:
            assert span["parent_id"] == root_parent_span_id, (run.name, span["parent_id"])
        else:
            assert span["parent_id"] in run_of_span, f"{span['name']}: parent span not in this tree"
            assert run_of_span[span["parent_id"]] == run.parent_run_id, (
                f"{span['name']}: parent is {spans_by_run[run_of_span[span['parent_id']]]['name']}, "
                f"LangChain says {runs[run.parent_run_id].name}"
            )
        assert span["attributes"][RUN_TYPE] == run.run_type, (span["name"], run.run_type)
        assert expected_name_ok(run, span["name"]), (run.run_type, run.name, span["name"])
        if run.error is None:
            assert span["status_code"] != "ERROR", (span["name"], span["status_message"])
        else:
            assert_error_span(span, run.error.split(":", 1)[0])
    return spans_by_run


def assert_error_span(span: dict, exc_type: str) -> None:
    assert span["status_code"] == "ERROR", (span["name"], span["status_code"])
    exceptions = [e for e in span["events"] if e["name"] == "exception"]
    assert exceptions, f"{span['name']}: no exception event, events={span['events']}"
    types = {str(e["attributes"].get("exception.type", "")) for e in exceptions}
    assert any(t == exc_type or t.endswith("." + exc_type) for t in types), (span["name"], types)
