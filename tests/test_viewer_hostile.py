"""Issue 12, item 6: ``otel-callbacks view`` on hostile files renders what is valid, warns in
one line per problem, and never shows a traceback."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from test_cli import span_lines

from otel_callbacks.cli import main

TRACE = "ab" * 16


def span(span_id: int, name: str, parent: int | None = None, start: Any = 1_000_000_000,
         end: Any = None, **extra: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"traceId": TRACE, "spanId": f"{span_id:016x}", "name": name, "kind": 1,
                           "startTimeUnixNano": str(start) if isinstance(start, int) else start,
                           "endTimeUnixNano": str(end if end is not None else 2_000_000_000 + span_id)}
    if parent is not None:
        out["parentSpanId"] = f"{parent:016x}"
    out.update(extra)
    return out


def line(*spans: dict[str, Any]) -> str:
    return json.dumps({"resourceSpans": [{"resource": {"attributes": []},
                                          "scopeSpans": [{"spans": list(spans)}]}]})


def view(tmp_path: Path, capsys: pytest.CaptureFixture[str], *lines: str,
         args: tuple[str, ...] = ()) -> tuple[int, str, str]:
    path = tmp_path / "spans.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    code = main(["view", "--color", "never", *args, str(path)])
    out, err = capsys.readouterr()
    return code, out, err


def names(out: str) -> list[str]:
    return [name for _, name, _ in span_lines(out)]


def header_count(out: str) -> int:
    header = next(text for text in out.splitlines() if text.startswith("trace "))
    return int(header.split(" spans")[0].split()[-1])


def one_line_warnings(err: str) -> list[str]:
    lines = err.splitlines()
    assert all(text.startswith("otel-callbacks: ") for text in lines), err
    assert "Traceback" not in err
    return lines


def test_span_that_is_its_own_parent(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = view(tmp_path, capsys, line(span(1, "selfish", parent=1)))
    assert code == 0
    assert names(out) == ["selfish"]
    assert any("cycle" in w for w in one_line_warnings(err))


def test_cycle_next_to_a_root_is_shown_not_dropped(tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = view(tmp_path, capsys, line(
        span(1, "root"), span(2, "child", parent=1),
        span(3, "loop-a", parent=5, start=1_100_000_000), span(4, "loop-b", parent=3),
        span(5, "loop-c", parent=4), span(6, "under-loop", parent=4)))
    assert code == 0
    shown = names(out)
    assert sorted(shown) == sorted(["root", "child", "loop-a", "loop-b", "loop-c", "under-loop"])
    assert header_count(out) == len(shown) == 6
    assert any("cycle" in w for w in one_line_warnings(err))


def test_very_deep_parent_chain(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    chain = [span(1, "level-1")] + [span(i, f"level-{i}", parent=i - 1) for i in range(2, 3001)]
    code, out, err = view(tmp_path, capsys, line(*chain))
    assert code == 0, err
    rows = span_lines(out)
    assert len(rows) == 3000 and header_count(out) == 3000
    assert rows[-1][1].endswith("level-3000")
    assert max(len(text) for text in out.splitlines()) < 400  # indentation is bounded


@pytest.mark.parametrize("start", [1e400, "1e400", -5, "9" * 40, float("nan"), [], None])
def test_absurd_timestamps(tmp_path: Path, capsys: pytest.CaptureFixture[str], start: Any) -> None:
    bad = span(2, "bad-time")
    bad["startTimeUnixNano"] = start
    text = line(span(1, "good"), bad)  # 1e400 and nan are written as JSON Infinity and NaN
    code, out, err = view(tmp_path, capsys, text)
    assert code == 0, err
    assert names(out) == ["good"]
    assert one_line_warnings(err)


def test_huge_integer_timestamp_in_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    huge = 10 ** 400  # a JSON integer: no float, no overflow while reading, too big to draw
    text = line(span(1, "good"), span(2, "bad-time", end="HUGE")).replace('"HUGE"', str(huge))
    assert str(huge) in text
    code, out, err = view(tmp_path, capsys, text)
    assert code == 0, err
    assert names(out) == ["good"]
    assert "end time out of range" in one_line_warnings(err)[0]


def test_json_nested_very_deep(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    deep = "[" * 100_000 + "]" * 100_000
    # An attribute value nested 900 levels: valid JSON, too deep for the value reader.
    value = '{"stringValue": "bottom"}'
    for _ in range(900):
        value = '{"arrayValue": {"values": [' + value + ']}}'
    deep_value = line(span(2, "deep-attr", attributes=[{"key": "k", "value": "VALUE"}]))
    code, out, err = view(tmp_path, capsys, line(span(1, "fine")), deep,
                          deep_value.replace('"VALUE"', value))
    assert code == 0, err
    assert "fine" in names(out)
    warnings = one_line_warnings(err)
    assert any(":2:" in w for w in warnings)


def test_control_characters_never_reach_the_terminal(tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    evil = "\x1b[2J\x1b]0;pwned\x07red\x1b[31mname\x07\x08\u202e"
    hostile = span(1, evil, attributes=[{"key": "k\x1b[1m", "value": {"stringValue": evil}}],
                   events=[{"name": evil, "timeUnixNano": "1500000000", "attributes": []}],
                   status={"code": 2, "message": evil})
    code, out, err = view(tmp_path, capsys, line(hostile), args=("-a",))
    assert code == 0, err
    assert "redname" in out
    for bad in ("\x1b", "\x07", "\x08", "\u202e"):
        assert bad not in out


def test_half_written_last_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    full = line(span(1, "root"), span(2, "child", parent=1))
    partial = line(span(3, "late"))[:40]
    code, out, err = view(tmp_path, capsys, full, partial)
    assert code == 0
    assert names(out) == ["root", "child"]
    [warning] = one_line_warnings(err)
    assert "spans.jsonl:2" in warning


def test_nothing_valid_is_still_one_line_error(tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = view(tmp_path, capsys, "{not json", "[" * 50_000)
    assert code == 1 and out == ""
    lines = one_line_warnings(err)
    assert lines[-1].startswith("otel-callbacks: error: ")


def test_many_bad_lines_give_a_bounded_number_of_warnings(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = view(tmp_path, capsys, line(span(1, "ok")), *(["garbage"] * 500))
    assert code == 0
    assert len(one_line_warnings(err)) <= 12


def test_hostile_file_through_the_command(tmp_path: Path) -> None:
    path = tmp_path / "hostile.jsonl"
    chain = [span(10, "deep-0")] + [span(10 + i, f"deep-{i}", parent=9 + i) for i in range(1, 3000)]
    path.write_text("\n".join([
        line(span(1, "self", parent=1), span(2, "\x1b[31mred"), *chain),
        '{"resourceSpans": [{"scopeSpans": [{"spans": [{"startTimeUnixNano": 1e400}]}]}]}',
        "[" * 100_000,
        line(span(3, "tail"))[:30]]) + "\n", encoding="utf-8")
    result = subprocess.run([sys.executable, "-m", "otel_callbacks.cli", "view", str(path)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr and "\x1b" not in result.stdout
    assert len(span_lines(result.stdout)) == 3002
    assert all(text.startswith("otel-callbacks: ") for text in result.stderr.splitlines())


def test_stdin_with_a_half_written_last_line(monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    import io

    partial = line(span(3, "late"))[:25]
    monkeypatch.setattr(sys, "stdin", io.StringIO(line(span(1, "piped")) + "\n" + partial))
    assert main(["view", "--color", "never", "-"]) == 0
    out, err = capsys.readouterr()
    assert names(out) == ["piped"]
    assert one_line_warnings(err)[0].startswith("otel-callbacks: warning: <stdin>:2: ")


def test_duplicate_span_ids_show_every_span_once(tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = view(tmp_path, capsys, line(
        span(1, "first"), span(1, "twin"), span(2, "child", parent=1), span(3, "grandchild", parent=2)))
    assert code == 0, err
    assert sorted(names(out)) == ["child", "first", "grandchild", "twin"]
    assert header_count(out) == 4
