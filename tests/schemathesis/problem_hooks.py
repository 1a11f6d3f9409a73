"""Schemathesis hooks for webex-push: every 4xx must carry an RFC 9457 problem body."""

import json

import schemathesis

PROBLEM_BASE = "https://github.com/webex-push/webex-push/blob/main/docs/api.md#"


@schemathesis.check
def problem_body_on_4xx(response, case):
    """A 4xx answer is `application/problem+json` with `type`, `title` and `status`."""
    if not 400 <= response.status_code < 500:
        return None
    content_type = response.headers.get("Content-Type", "")
    assert content_type.split(";")[0].strip() == "application/problem+json", (
        f"{response.status_code} with Content-Type {content_type!r}, not a problem"
    )
    try:
        problem = json.loads(response.text)
    except ValueError as error:
        raise AssertionError(f"{response.status_code} problem body is not JSON: {error}")
    assert isinstance(problem, dict), f"problem body is not an object: {problem!r}"
    assert isinstance(problem.get("type"), str) and problem["type"].startswith(PROBLEM_BASE), (
        f"problem without a documented type: {problem!r}"
    )
    assert isinstance(problem.get("title"), str) and problem["title"], (
        f"problem without a title: {problem!r}"
    )
    assert problem.get("status") == response.status_code, (
        f"problem status {problem.get('status')!r} differs from {response.status_code}"
    )
    return None


def _is_field_value(value):
    """RFC 9110 field-value: visible ASCII, space and tab (obs-text aside). Control
    characters are refused by the HTTP/1 parser with a bare `400` before any route
    runs: a protocol error, not an API answer, so such cases are not generated."""
    return isinstance(value, str) and all(c == "\t" or " " <= c <= "~" for c in value)


@schemathesis.hook
def filter_headers(context, headers):
    return headers is None or all(_is_field_value(v) for v in headers.values())
