"""The console in a real browser: Debian's Chromium, headless, driven by
Playwright against a real server on loopback. Assertions are on the DOM
(the console's ``data-testid`` hooks); screenshots of each page are saved in
the test's tmp dir (and, with STEPGRAPH_SCREENSHOTS=DIR, there too: the
docs' pictures)."""

from __future__ import annotations

import os
import re
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from examples import agent_approval

from stepgraph import demo

from . import flows

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    if not Path(CHROMIUM).exists():
        if os.environ.get("STEPGRAPH_REQUIRE_CHROMIUM"):
            pytest.fail(f"Chromium is required here but {CHROMIUM} is missing")
        pytest.skip("needs Debian's chromium (apt install chromium)")
    from playwright.sync_api import expect, sync_playwright

    # (waits as long as the pages' own; no page.wait_for_function: it evals
    # its predicate in the page, which the console's CSP may refuse)
    expect.set_options(timeout=15_000)
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield launched
        launched.close()


class Console:
    """A page of the console, failing the test on any script error."""

    def __init__(
        self,
        browser: object,
        base: str,
        shots: Path,
        width: int = 1280,
        height: int = 800,
        refused: str | None = None,
    ):
        self.context = browser.new_context(viewport={"width": width, "height": height})  # type: ignore[attr-defined]
        self.page = self.context.new_page()
        self.page.set_default_timeout(15_000)
        self.errors: list[str] = []
        self.page.on("pageerror", lambda error: self.errors.append(str(error)))
        self.page.on(
            "console",
            lambda message: self.errors.append(message.text) if message.type == "error" else None,
        )
        self.base = base
        self.shots = shots
        self.refused = refused  # errors expected: calls the test has the server refuse
        self.closed = False

    def open(self, route: str) -> None:
        self.page.goto(self.base + route)

    def find(self, test_id: str, **attrs: str):  # type: ignore[no-untyped-def]
        selector = f'[data-testid="{test_id}"]' + "".join(
            f'[data-{k.replace("_", "-")}="{v}"]' for k, v in attrs.items()
        )
        return self.page.locator(selector)

    def shot(self, name: str) -> None:
        self.page.screenshot(path=str(self.shots / f"{name}.png"), full_page=True)
        docs = os.environ.get("STEPGRAPH_SCREENSHOTS")
        if docs:
            Path(docs).mkdir(parents=True, exist_ok=True)
            shutil.copy(self.shots / f"{name}.png", Path(docs) / f"{name}.png")

    def close(self) -> None:
        """Close, failing on any error the page logged but those the test
        expects (``refused``: calls a stopped server or a missing token
        refused). Once: a test may close it before it stops its server."""
        if self.closed:
            return
        self.closed = True
        self.context.close()
        errors = self.errors
        if self.refused is not None:
            errors = [e for e in errors if self.refused not in e]
        assert errors == [], errors


@pytest.fixture
def open_console(browser: object, tmp_path: Path) -> Iterator[Callable[..., Console]]:
    """Opens a console page on a server's address (in a viewport of a size,
    expecting some errors); each is closed, and its errors checked, when the
    test ends."""
    opened: list[Console] = []

    def open_page(
        base: str, *, width: int = 1280, height: int = 800, refused: str | None = None
    ) -> Console:
        opened.append(Console(browser, base, tmp_path, width, height, refused))
        return opened[-1]

    yield open_page
    for console in opened:
        console.close()


def expect(locator):  # type: ignore[no-untyped-def]
    """Playwright's ``expect``: assertions that wait for the page."""
    from playwright.sync_api import expect

    return expect(locator)


def status_of(console: Console):  # type: ignore[no-untyped-def]
    return expect(console.find("run-status"))


def run_id_of(console: Console) -> str:
    try:
        console.page.wait_for_url(re.compile(r"#/runs/[0-9a-f]+$"), wait_until="commit")
    except Exception:
        console.shot("not-navigated")
        raise
    return console.page.url.rsplit("/", 1)[1]


def test_start_watch_answer_and_finish_a_run_from_the_page(serve, open_console):
    flows.PACE = 0.4
    server = serve(flows.paced, flows.gate)
    console = open_console(server.url + "/")
    console.open("#/workflows")
    card = console.find("workflow-card", name="paced")
    card.wait_for()
    assert console.find("graph-node", id="merge").count() >= 1
    console.shot("console-workflows")
    form = card.locator('[data-testid="start-form"]')
    form.locator("input, textarea").first.fill("cats <b>& ü")
    form.locator('[data-testid="start-submit"]').click()
    run_id = run_id_of(console)

    # Live: the graph shows a check running, then done; the timeline fills.
    console.find("graph-node", id="check_style", state="running").wait_for()
    console.shot("console-run-live")
    console.find("graph-node", id="merge", state="done").wait_for()
    bars = console.find("timeline-bar")
    assert bars.count() >= 4
    executors = {bars.nth(i).get_attribute("data-executor") for i in range(bars.count())}
    assert {"draft", "check_facts", "check_style", "merge"} <= executors

    # The approval as a form; answered; the output shows.
    request = console.find("request-form")
    request.wait_for()
    assert "facts checked" in console.find("pending-requests").inner_text()
    console.shot("console-run")
    yes = request.locator("input[type=checkbox]")
    if yes.count():
        yes.first.check()
        request.locator('[data-testid="request-submit"]').click()
    else:
        request.get_by_role("button", name=re.compile("yes", re.I)).click()
    item = console.find("output-item")
    item.wait_for()
    assert "yes" in item.inner_text() and "cats <b>& ü" in item.inner_text()
    status_of(console).to_contain_text("idle")
    assert (
        console.find("run-id").inner_text().strip().endswith(run_id[:8])
        or run_id in console.page.content()
    )
    assert console.find("event-row", kind="output").count() == 1
    console.shot("console-run-done")

    # The runs list has it; on a phone the run page still reads.
    console.open("#/runs")
    console.find("run-row", run_id=run_id).wait_for()
    console.shot("console-runs")
    console.close()  # (done: its list would refresh on beside the phone's page)
    phone = open_console(server.url + "/", width=390, height=844)
    phone.open(f"#/runs/{run_id}")
    phone.find("output-item").wait_for()
    width = phone.page.evaluate("document.documentElement.scrollWidth")
    assert width <= 400, f"the run page is {width}px wide on a 390px phone"
    phone.shot("console-run-phone")


def test_the_bundled_demo_from_the_page(serve, open_console):
    server = serve(demo.build)
    console = open_console(server.url + "/")
    console.open("#/workflows/review-pipeline")
    form = console.find("start-form").first
    form.wait_for()
    form.locator("input, textarea").first.fill("supersteps [and] <inboxes>")
    form.locator('[data-testid="start-submit"]').click()
    run_id_of(console)
    request = console.find("request-form")
    request.wait_for()
    console.find("graph-node", id="editor", state="done").wait_for()
    request.get_by_role("button", name=re.compile("^yes$", re.I)).click()
    item = console.find("output-item")
    item.wait_for()
    assert item.inner_text().startswith("published: Supersteps [and] <inboxes>")


def test_a_tool_call_is_approved_from_the_page(serve, open_console):
    model = agent_approval.default_model()
    server = serve(lambda: agent_approval.build(model=model))
    console = open_console(server.url + "/")
    try:
        console.open("#/workflows/research")
        form = console.find("start-form").first
        form.wait_for()
        form.locator("input, textarea").first.fill("42")  # (text, though it reads as JSON)
        form.locator('[data-testid="start-submit"]').click()
        run_id_of(console)
        console.find("approve-button").wait_for()
        assert "Notes: 42" in console.find("pending-requests").inner_text()
        text = console.find("agent-text", path="researcher")
        assert "Searching, and drafting the email." in text.inner_text()
        assert "send_email" in console.find("pending-requests").inner_text()
        console.shot("console-tool-approval")
        console.find("approve-button").click()
        item = console.find("output-item")
        item.wait_for()
        assert "accept" in item.inner_text()
    finally:
        server.call(model.aclose)


def test_the_token_comes_from_the_address_and_leaves_it(serve, open_console):
    token = "a-token-for-the-browser-test"
    server = serve(flows.gate, token=token)
    console = open_console(server.url + "/")
    console.open(f"#token={token}")
    console.find("workflow-card", name="gate").wait_for()
    assert token not in console.page.url
    console.page.reload()  # (kept for the tab's session)
    console.find("workflow-card", name="gate").wait_for()
    stranger = open_console(server.url + "/", refused="401")
    stranger.open("#/workflows")
    stranger.find("error-banner").wait_for()
    assert "token" in stranger.find("error-banner").inner_text().lower()
    assert stranger.find("workflow-card").count() == 0


def test_fork_from_a_checkpoint_on_the_page(serve, open_console):
    server = serve(flows.gate)
    with server.client() as client:
        run_id = client.post("/api/workflows/gate/runs", json={"input": "fork me"}).json()["run_id"]
    console = open_console(server.url + "/")
    console.open(f"#/runs/{run_id}")
    rows = console.find("checkpoint-row")
    rows.first.wait_for()
    assert rows.count() == 2
    console.shot("console-checkpoints")
    rows.last.locator('[data-testid="fork-button"]').click()
    console.page.wait_for_url(re.compile(r"#/runs/(?!" + run_id + r")[0-9a-f]+$"))
    console.find("request-form").wait_for()


def test_a_run_going_on_in_another_server_is_cancelled_from_the_page(serve, tmp_path, open_console):
    import stepgraph as sg

    flows.STEP = 0.05
    path = tmp_path / "shared.sqlite"
    running = serve(flows.slow, store=sg.SqliteCheckpointStore(path))
    watching = serve(flows.slow, store=sg.SqliteCheckpointStore(path))  # another process, say
    with running.client() as client:
        going = client.post("/api/workflows/slow/runs", json={"input": {"steps": 400}})
        run_id = going.json()["run_id"]
    console = open_console(watching.url + "/")
    console.open(f"#/runs/{run_id}")
    button = console.find("cancel-button")
    button.wait_for(state="visible")  # not live on this server, but going on
    button.click()
    expect(console.page.locator("main")).to_contain_text("cancelled")
    with running.client() as client:
        assert client.get(f"/api/runs/{run_id}").json()["status"] == "cancelled"
    # Why it stopped (it said nothing: the run's error was null)
    expect(console.page.locator(".run-error")).to_have_text(
        re.compile(r"^Stopped: cancelled on request: asked to stop through the store ")
    )
    console.shot("run-cancelled-elsewhere")


def _run_served_elsewhere(serve, tmp_path, flow, given, status):
    """A run of ``flow`` (given ``given``) that a server of it took to
    ``status``, and a second server on the same store that serves another
    workflow: the two servers, and the run's id."""
    import stepgraph as sg

    path = tmp_path / "shared.sqlite"
    serving = serve(flow, store=sg.SqliteCheckpointStore(path))
    other = serve(flows.slow, store=sg.SqliteCheckpointStore(path))  # another workflow
    with serving.client() as client:
        name = client.get("/api/workflows").json()[0]["name"]
        run_id = client.post(f"/api/workflows/{name}/runs", json={"input": given}).json()["run_id"]
        deadline = time.monotonic() + 30
        while client.get(f"/api/runs/{run_id}").json()["status"] != status:
            assert time.monotonic() < deadline
            time.sleep(0.05)
    return serving, other, run_id


def test_a_waiting_run_of_a_workflow_not_served_here_shows_its_requests_unanswerable(
    serve, tmp_path, open_console
):
    _, other, run_id = _run_served_elsewhere(
        serve, tmp_path, flows.gate, "go?", "idle_with_pending_requests"
    )
    console = open_console(other.url + "/")
    console.open(f"#/runs/{run_id}")
    # (it said "No pending requests." of a run waiting for one)
    card = console.find("request-form")
    expect(card).to_contain_text('"go?"')
    expect(card.get_by_test_id("not-served")).to_contain_text(
        "This server does not serve the run's workflow, so it cannot answer this request "
        "(it takes builtins.bool)"
    )
    assert card.get_by_test_id("request-submit").count() == 0
    assert card.locator("button").count() == 0
    # Nor resumed or forked from here: the server refuses both (409). (It
    # offered "Fork from here" on each checkpoint.)
    expect(console.find("checkpoint-row").first).to_be_visible()
    expect(console.find("checkpoints-not-served")).to_have_text(
        "This server does not serve the run's workflow, so it cannot resume or fork the run "
        "from its checkpoints: do that where the workflow is served."
    )
    assert console.find("checkpoint-row").locator("button").count() == 0
    console.shot("run-not-served-here")


def test_a_failed_run_of_a_workflow_not_served_here_offers_no_resume(serve, tmp_path, open_console):
    serving, other, run_id = _run_served_elsewhere(serve, tmp_path, flows.failing, "x", "failed")
    with other.client() as client:  # (what the button would have asked for)
        assert client.post(f"/api/runs/{run_id}/resume", json={}).status_code == 409
    console = open_console(other.url + "/")
    console.open(f"#/runs/{run_id}")
    expect(console.find("run-status")).to_have_text("failed")
    # (it offered "Resume run", which the server refuses)
    expect(console.find("resume-not-served")).to_have_text(
        "This server does not serve workflow 'failing', so it cannot resume this run: "
        "resume it where the workflow is served."
    )
    expect(console.page.locator("header [data-testid=resume-button]")).to_be_hidden()
    # Where it is served, the button is there.
    here = open_console(serving.url + "/")
    here.open(f"#/runs/{run_id}")
    expect(here.page.locator("header [data-testid=resume-button]")).to_be_visible()
    expect(here.find("resume-not-served")).to_be_hidden()


def wait_for_outputs(console: Console, expected: list[str]) -> None:
    """Until the page lists exactly these outputs."""
    expect(console.find("output-item")).to_have_text(expected)


def stream_ended(console: Console) -> None:
    expect(console.page.locator("body")).to_have_attribute("data-streaming", "ended")


def test_a_replay_from_the_page_shows_the_replayed_branchs_outputs(serve, open_console):
    from .test_api import wait_for

    server = serve(flows.counting)
    with server.client() as client:
        body = {"input": {"steps": 4}}
        run_id = client.post("/api/workflows/counting/runs", json=body).json()["run_id"]
        before = wait_for(client, run_id, "idle")
    console = open_console(server.url + "/")
    console.open(f"#/runs/{run_id}")
    wait_for_outputs(console, before["outputs"])
    console.page.get_by_role("button", name="Resume from here (superstep 1)").click()
    with server.client() as client:
        deadline = time.monotonic() + 20
        while True:  # (the replay's three checkpoints stored, the run ended)
            after = wait_for(client, run_id, "idle")
            if len(after["checkpoints"]) == len(before["checkpoints"]) + 3:
                break
            assert time.monotonic() < deadline, after
            time.sleep(0.02)
    assert after["outputs"] == ["left 4", "left 3", "left 2", "left 1"]
    wait_for_outputs(console, after["outputs"])
    console.page.reload()
    stream_ended(console)
    wait_for_outputs(console, after["outputs"])  # (the old branch's events are in the log)
    assert console.find("event-row", kind="output").count() == 7

    # The event log's 16-digit ids: shortened, whole in the title, clear of the time.
    row = console.find("event-row").first
    event_id = row.get_attribute("data-id")
    assert len(event_id) == 16
    shown = row.locator(".ev-id")
    assert shown.inner_text() == f"#…{event_id[-6:]}"
    assert event_id in shown.get_attribute("title")
    assert console.page.evaluate(
        """() => [...document.querySelectorAll('[data-testid=event-row]')].every(row => {
            const id = row.querySelector('.ev-id'), time = row.querySelector('.ev-time');
            return id.getBoundingClientRect().right <= time.getBoundingClientRect().left
                && id.scrollWidth <= id.clientWidth && time.scrollWidth <= time.clientWidth;
        })"""
    )
    # Nothing to resume from where the run went idle.
    last = console.find("checkpoint-row").last
    assert last.locator('[data-testid="resume-button"]').count() == 0
    assert last.locator('[data-testid="fork-button"]').count() == 1


def test_a_waiting_run_page_follows_answers_given_elsewhere(serve, tmp_path, open_console):
    import stepgraph as sg

    path = tmp_path / "shared.sqlite"
    here = serve(flows.gate, store=sg.SqliteCheckpointStore(path))
    other = serve(flows.gate, store=sg.SqliteCheckpointStore(path))  # another server, say
    console = open_console(here.url + "/")
    for answering in (here, other):  # (curl on this server; another server)
        with here.client() as client:
            started = client.post("/api/workflows/gate/runs", json={"input": "go?"})
            run_id = started.json()["run_id"]
        console.open(f"#/runs/{run_id}")
        console.find("request-form").wait_for()
        stream_ended(console)
        with answering.client() as client:
            [request] = client.get(f"/api/runs/{run_id}").json()["pending_requests"]
            body = {"responses": {request["request_id"]: True}}
            assert client.post(f"/api/runs/{run_id}/responses", json=body).status_code == 202
        # No reload: the form goes, the output comes, the status says idle.
        console.find("request-form").wait_for(state="detached")
        wait_for_outputs(console, ["go?: yes"])
        status_of(console).to_have_text("idle")
        assert console.page.locator(".tag-live").count() == 0


def test_a_run_page_outlives_a_restart_of_its_server(serve, tmp_path, open_console):
    import stepgraph as sg

    flows.STEP = 0.05
    path = tmp_path / "restart.sqlite"
    first = serve(flows.slow, store=sg.SqliteCheckpointStore(path))
    with first.client() as client:
        going = client.post("/api/workflows/slow/runs", json={"input": {"steps": 400}})
        run_id = going.json()["run_id"]
    console = open_console(first.url + "/", refused="net::ERR")
    details = re.compile(rf"/api/runs/{run_id}$")
    console.open(f"#/runs/{run_id}")
    console.page.locator(".tag-live").wait_for()
    # The server goes away: the stream hears the run stop, but the
    # details that would follow cannot be had (the server is down).
    console.page.route(details, lambda route: route.abort())
    first.stop()
    status_of(console).to_have_text("cancelled")
    assert console.page.locator(".tag-live").count() == 0  # (never "cancelled live")
    console.find("error-banner").wait_for()

    serve(flows.slow, store=sg.SqliteCheckpointStore(path), port=first.port)
    console.page.unroute(details)
    # No reload: the page hears from the new server, and offers to resume.
    console.page.get_by_role("button", name="Resume run").wait_for()
    console.page.locator(".tag-interrupted").wait_for()
    console.find("error-banner").wait_for(state="hidden")
    assert console.page.locator(".tag-live").count() == 0


def test_a_long_runs_page_shows_its_newest_checkpoints_and_the_rest_on_asking(serve, open_console):
    server = serve(flows.long_counting)
    with server.client() as client:
        run_id = client.post("/api/workflows/long/runs", json={"input": {"steps": 130}}).json()[
            "run_id"
        ]
        for _ in range(2000):
            run = client.get(f"/api/runs/{run_id}").json()
            if run["status"] == "idle" and not run["live"]:
                break
            time.sleep(0.01)
        total = run["checkpoints_total"]
    assert total > 100
    console = open_console(server.url + "/")
    console.open(f"#/runs/{run_id}")
    expect(console.find("checkpoints-older")).to_contain_text(
        f"{total - 100} older checkpoints not shown"
    )
    rows = console.find("checkpoint-row")
    expect(rows).to_have_count(100)
    expect(rows.last).to_have_attribute(
        "data-checkpoint-id", run["checkpoints"][-1]["checkpoint_id"]
    )
    console.find("checkpoints-show-older").click()
    expect(rows).to_have_count(total)
    expect(console.find("checkpoints-older")).to_be_hidden()


# Watches a run page: when its graph is drawn, and when its event stream ends.
WATCH_THE_REPLAY = """
window.__seen = {graph: null, ended: null};
const watch = () => {
  const seen = window.__seen, streaming = document.body && document.body.dataset.streaming;
  if (seen.graph === null && document.querySelector(".graph-slot svg")) seen.graph = performance.now();
  if (streaming === "ended" && seen.ended === null) seen.ended = performance.now();
  requestAnimationFrame(watch);
};
requestAnimationFrame(watch);
"""


def test_a_long_runs_page_is_drawn_while_its_event_log_is_read_back(serve, open_console):
    # (a trial's page of a run of 100,000 supersteps sat at "Status: loading",
    # nothing drawn, for seconds: the stream's backlog held the page)
    server = serve(flows.long_counting)
    with server.client() as client:
        body = {"input": {"steps": 4000}}
        run_id = client.post("/api/workflows/long/runs", json=body).json()["run_id"]
        for _ in range(6000):
            run = client.get(f"/api/runs/{run_id}").json()
            if run["status"] == "idle" and not run["live"]:
                break
            time.sleep(0.01)
    assert run["supersteps"] >= 4000
    console = open_console(server.url + "/")
    console.page.add_init_script(WATCH_THE_REPLAY)
    console.open(f"#/runs/{run_id}")
    expect(console.find("run-status")).to_have_text("idle")
    expect(console.page.locator("body")).to_have_attribute(
        "data-streaming", "ended", timeout=60_000
    )
    seen = console.page.evaluate("window.__seen")
    # (drawn while the backlog is read, not after: it held the page before)
    assert seen["graph"] is not None and seen["graph"] < seen["ended"], seen
    expect(console.find("timeline-bar")).to_have_count(80)  # (the newest 80 supersteps)
    # The table says the same (it listed the newest 2,000 calls, re-drawn
    # at each frame of a live run while open).
    console.page.get_by_text("Timeline as a table").click()
    table_rows = console.page.locator(".tl-table tbody tr")
    expect(table_rows).to_have_count(80)
    expect(table_rows.last.locator("td").nth(1)).to_have_text(str(run["supersteps"]))
    assert not console.errors


def test_any_token_works_from_the_address_serve_prints(tmp_path, open_console):
    # (a token holding '%' or '&' was printed as it is: the console read
    # another token from the address, and was locked out)
    from .test_cli_serve import start, stop

    token = "a%41 b&token=c#d+e/f?-0123456789"
    process, url = start(
        "tests.serve.flows:gate", "--store", f"sqlite:{tmp_path / 's.sqlite'}", "--token", token
    )
    try:
        assert url.startswith("http://127.0.0.1:") and "#token=" in url, url
        console = open_console(url)
        console.open("")
        console.find("workflow-card", name="gate").wait_for()
        assert "token" not in console.page.url
        console.close()  # (before the server stops)
    finally:
        code, _, err = stop(process)
    assert code == 0, err


def test_a_failed_runs_page_after_a_restart_shows_what_failed_where(serve, tmp_path, open_console):
    # (after a restart no events are kept: the page said 'boom' never ran,
    # "Supersteps: 0", beside an error naming 'boom' in superstep 1)
    import stepgraph as sg

    from .test_api import wait_for

    path = tmp_path / "failed.sqlite"
    first = serve(flows.failing, store=sg.SqliteCheckpointStore(path))
    with first.client() as client:
        run_id = client.post("/api/workflows/failing/runs", json={"input": "x"}).json()["run_id"]
        wait_for(client, run_id, "failed")
    first.stop()
    second = serve(flows.failing, store=sg.SqliteCheckpointStore(path))
    with second.client() as client:
        run = client.get(f"/api/runs/{run_id}").json()
    assert not run["events_kept"] and run["supersteps"] == 0
    assert run["failure"] == {"executor_id": "boom", "superstep": 1}
    console = open_console(second.url + "/")
    console.open(f"#/runs/{run_id}")
    status_of(console).to_have_text("failed")
    expect(console.find("graph-node", id="boom")).to_have_attribute("data-state", "failed")
    bar = console.find("timeline").locator('[data-testid="timeline-bar"]')
    expect(bar).to_have_count(1)
    assert bar.get_attribute("data-executor") == "boom"
    assert bar.get_attribute("data-superstep") == "1"
    assert "failed" in (bar.get_attribute("aria-label") or "")
    facts = console.page.locator(".facts").inner_text()
    assert re.search(r"Supersteps\s+1\b", facts), facts
    assert "what the store holds" in console.find("timeline").inner_text()
    console.shot("failed-after-restart")


def test_a_finished_runs_page_shows_how_it_ended_while_its_past_events_replay(serve, open_console):
    # (a 100,000-superstep run's page said "failed · streaming live", nodes
    # flickering, for 30 s while its event log replayed)
    import json

    from .conftest import sse
    from .test_api import wait_for

    server = serve(flows.counting)
    with server.client() as client:
        body = {"input": {"steps": 3}}
        run_id = client.post("/api/workflows/counting/runs", json=body).json()["run_id"]
        wait_for(client, run_id, "idle")
        events = [e for e in sse(client, run_id) if e["kind"] != "end"]
    # The first half of its past, as the stream sends it, then the stream
    # drops (the page reconnects and gets the rest): seen mid-replay.
    half = events[: len(events) // 2]
    assert any(e["kind"] == "status" and e["status"] == "in_progress" for e in half)
    text = "".join(f"id: {e['id']}\ndata: {json.dumps(e)}\n\n" for e in half)
    console = open_console(server.url + "/")
    stream = re.compile(rf"/api/runs/{run_id}/events$")
    console.page.route(
        stream,
        lambda route: route.fulfill(status=200, content_type="text/event-stream", body=text),
    )
    console.open(f"#/runs/{run_id}")
    body_of = console.page.locator("body")
    expect(body_of).to_have_attribute("data-streaming", "history")
    log = console.find("event-log")
    expect(log).to_contain_text("superstep_started")
    status_of(console).to_have_text("idle")  # (not the replayed "in_progress")
    assert "streaming live" not in console.page.locator(".run-line").inner_text()
    assert console.page.locator(".tag-live").count() == 0
    console.page.unroute(stream)
    expect(body_of).to_have_attribute("data-streaming", "ended")
    status_of(console).to_have_text("idle")
    expect(console.find("graph-node", id="count")).to_have_attribute("data-state", "done")


def test_a_finished_runs_page_after_a_restart_does_not_claim_nothing_ran(
    serve, tmp_path, open_console
):
    # (after a restart an idle run's page said "No executor has run yet"
    # beside "Supersteps: 30001", every node drawn 'waiting')
    import stepgraph as sg

    from .test_api import wait_for

    path = tmp_path / "idle.sqlite"
    first = serve(flows.counting, store=sg.SqliteCheckpointStore(path))
    with first.client() as client:
        body = {"input": {"steps": 5}}
        run_id = client.post("/api/workflows/counting/runs", json=body).json()["run_id"]
        wait_for(client, run_id, "idle")
    first.stop()
    second = serve(flows.counting, store=sg.SqliteCheckpointStore(path))
    with second.client() as client:
        run = client.get(f"/api/runs/{run_id}").json()
    assert not run["events_kept"] and run["supersteps"] == 5
    console = open_console(second.url + "/")
    console.open(f"#/runs/{run_id}")
    status_of(console).to_have_text("idle")
    expect(console.page.locator("body")).to_have_attribute("data-streaming", "ended")
    node = console.find("graph-node", id="count")
    expect(node).to_have_attribute("data-state", "unknown")
    assert "waiting" not in (node.get_attribute("aria-label") or "")
    empty = console.find("timeline-empty")
    expect(empty).to_contain_text("did not see the run's events")
    assert "No executor has run yet" not in console.find("timeline").inner_text()
    console.shot("idle-after-restart")


def test_a_long_executor_id_is_cut_clear_of_its_status_badge(serve, open_console):
    # (a long id's "…" was drawn under the status badge, so it looked whole)
    from .test_api import wait_for

    server = serve(flows.wide_named)
    with server.client() as client:
        run_id = client.post("/api/workflows/wide/runs", json={"input": "x"}).json()["run_id"]
        wait_for(client, run_id, "idle")
    console = open_console(server.url + "/")
    console.open(f"#/runs/{run_id}")
    node = console.find("graph-node", id="an_executor_with_a_WIDE_AND_LONG_IDENTIFIER")
    expect(node).to_have_attribute("data-state", "done")
    label = node.locator(".label")
    assert (label.text_content() or "").endswith("…")
    text_right = label.bounding_box()["x"] + label.bounding_box()["width"]
    badge_left = node.locator(".badge circle").bounding_box()["x"]
    assert text_right < badge_left, (text_right, badge_left)
    console.shot("long-id")


def test_a_big_superstep_fits_its_column_in_the_event_log(serve, open_console):
    # (the superstep column, 2.5rem, held "s1000": "s100000" ran into the kind)
    import json

    from .test_api import wait_for

    server = serve(flows.counting)
    with server.client() as client:
        body = {"input": {"steps": 1}}
        run_id = client.post("/api/workflows/counting/runs", json=body).json()["run_id"]
        wait_for(client, run_id, "idle")
    # The log of a long run, as the stream would send it (no need to run
    # 1,000,000 supersteps to draw their numbers).
    steps = [100_000, 999_999, 1_000_000]
    events = [
        {"id": 1000 + i, "kind": "superstep_started", "time": 1.0 + i, "superstep": step}
        for i, step in enumerate(steps)
    ]
    text = "".join(f"id: {e['id']}\ndata: {json.dumps(e)}\n\n" for e in events)
    text += f"event: end\ndata: {json.dumps({'status': 'idle'})}\n\n"
    console = open_console(server.url + "/")
    console.page.route(
        re.compile(rf"/api/runs/{run_id}/events$"),
        lambda route: route.fulfill(status=200, content_type="text/event-stream", body=text),
    )
    console.open(f"#/runs/{run_id}")
    rows = console.find("event-row")
    expect(rows).to_have_count(len(steps))
    for i, step in enumerate(steps):
        cell = rows.nth(i).locator(".ev-step")
        assert cell.text_content() == f"s{step}"
        # (all of it shown, and left of the kind column)
        assert cell.evaluate("e => e.scrollWidth <= e.clientWidth"), step
        kind = rows.nth(i).locator(".ev-kind").bounding_box()
        box = cell.bounding_box()
        assert box["x"] + box["width"] <= kind["x"], (step, box, kind)


def test_resume_from_here_is_held_while_the_run_goes_on(serve, open_console):
    # (the checkpoints offered "Resume from here" while the run ran: the
    # server refuses it then, 409)
    from .test_api import wait_for
    from .test_runs import hold_at

    server = serve(flows.counting)
    console = open_console(server.url + "/")
    try:
        flows.HOLD_AT = 3
        with server.client() as client:
            body = {"input": {"steps": 5}}
            run_id = client.post("/api/workflows/counting/runs", json=body).json()["run_id"]
            hold_at(3)  # (going on, with checkpoints of supersteps 0-2)
            console.open(f"#/runs/{run_id}")
            status_of(console).to_have_text(re.compile("^in_progress"))
            resumes = console.find("checkpoint-row").locator('[data-testid="resume-button"]')
            expect(resumes).to_have_count(3)
            for i in range(3):
                expect(resumes.nth(i)).to_be_disabled()
                assert "going on" in (resumes.nth(i).get_attribute("title") or "")
            assert console.find("checkpoint-row").locator(":enabled").count() == 3  # (forks)
            flows.HOLD_AT = None
            wait_for(client, run_id, "idle")
        status_of(console).to_have_text("idle")
        expect(resumes).to_have_count(5)  # (the idle checkpoint has none: nothing to run)
        for i in range(5):
            expect(resumes.nth(i)).to_be_enabled()
            assert resumes.nth(i).get_attribute("title") is None
    finally:
        flows.HOLD_AT = None


def test_no_token_is_left_in_the_address_or_its_history(serve, open_console):
    # (an address holding "token=" twice kept the second in the address bar
    # and the tab's history; a token amid other parameters joined its
    # neighbours: "?status=idle&token=T&workflow=gate" became
    # "?status=idleworkflow=gate")
    token = "a-token-for-the-browser-test"
    server = serve(flows.gate, token=token)
    console = open_console(server.url + "/")
    cdp = console.context.new_cdp_session(console.page)

    def addresses() -> list[str]:
        return [entry["url"] for entry in cdp.send("Page.getNavigationHistory")["entries"]]

    console.open(f"#/runs?status=idle&token={token}&workflow=gate&token={token}")
    console.find("runs-table").wait_for()
    # (read in the page: Playwright's page.url can lag a replaceState)
    assert console.page.evaluate("location.hash") == "#/runs?status=idle&workflow=gate"
    assert not [url for url in addresses() if "token" in url], addresses()
    assert console.page.evaluate("sessionStorage.getItem('stepgraph-token')") == token
    # An address with the token opened in the tab already showing the console.
    console.page.evaluate(f"location.hash = '#token={token}&token={token}'")
    console.find("workflow-card", name="gate").wait_for()
    assert console.page.evaluate("location.hash") == ""
    assert not [url for url in addresses() if "token" in url], addresses()
    console.page.reload()  # (the token is kept for the tab's session)
    console.find("workflow-card", name="gate").wait_for()
    assert console.page.evaluate("location.hash") == ""


def test_the_event_logs_executor_filter_stays_inside_its_card(serve, open_console):
    # (an option as long as a 156-character executor id made the filter
    # 1,188 px wide, past its card's right edge)
    from .test_api import wait_for

    server = serve(flows.very_wide_named)
    with server.client() as client:
        run_id = client.post("/api/workflows/very-wide/runs", json={"input": "x"}).json()
        wait_for(client, run_id["run_id"], "idle")
    console = open_console(server.url + "/")
    console.open(f"#/runs/{run_id['run_id']}")
    log = console.find("event-log")
    log.wait_for()
    select = console.page.get_by_label("Executor", exact=True)
    expect(select.locator("option")).to_have_count(2)  # (all, and the one executor)
    filters = console.page.locator(".filters").filter(has=select)
    box, outer = select.bounding_box(), filters.bounding_box()
    assert box["x"] + box["width"] <= outer["x"] + outer["width"] + 0.5, (box, outer)


def test_the_page_of_a_run_whose_process_was_killed_offers_to_resume_it(
    serve, tmp_path, open_console
):
    import stepgraph as sg

    flows.STEP = 0.01
    path = tmp_path / "killed.sqlite"
    from .test_stranded import killed_mid_run

    run_id = killed_mid_run(path)
    server = serve(flows.slow, store=sg.SqliteCheckpointStore(path))
    console = open_console(server.url + "/")
    console.open(f"#/runs/{run_id}")
    console.page.locator(".tag-interrupted").wait_for()
    resume = console.page.get_by_role("button", name="Resume run")
    resume.wait_for()
    expect(console.find("cancel-button")).to_be_hidden()
    expect(console.find("resume-button", action="resume").first).to_be_enabled()
    resume.click()
    status_of(console).to_have_text("idle", timeout=30_000)
    expect(console.find("output-item")).to_have_text(["done "])


def test_a_long_event_log_holds_a_window_of_rows_and_pages_back_to_its_first_event(
    serve, open_console
):
    # (the log laid out its newest 2,000 rows several times a second while
    # a run's tens of thousands of events were read back, which froze the
    # page for a second at a time, and the older events could not be seen)
    from .conftest import sse
    from .test_api import wait_for
    from .test_runs import hold_at

    server = serve(flows.long_counting)
    console = open_console(server.url + "/")
    rows = console.find("event-row")
    older, newest = console.find("event-log-older"), console.find("event-log-newest")

    def shown() -> list[int]:
        return [
            int(i)
            for i in console.page.eval_on_selector_all(
                '[data-testid="event-row"]', "rows => rows.map(row => row.dataset.id)"
            )
        ]

    try:
        with server.client() as client:
            body = {"input": {"steps": 700}}
            flows.HOLD_AT = 40  # (held from its start: it cannot go past the hold)
            run_id = client.post("/api/workflows/long/runs", json=body).json()["run_id"]
            hold_at(40)  # (going on, its log thousands of events long)
            console.open(f"#/runs/{run_id}")
            expect(rows).to_have_count(500)  # (of some 3,300 events so far)
            expect(console.find("event-log-note")).to_contain_text(re.compile(r"^Showing events"))
            flows.HOLD_AT = None
            wait_for(client, run_id, "idle")
            events = [e["id"] for e in sse(client, run_id) if e["kind"] != "end"]
        assert len(events) > 3000
        # The live tail was followed to the run's last event, in a window of 500 rows.
        expect(rows.last).to_have_attribute("data-id", str(events[-1]))
        expect(rows).to_have_count(500)
        assert shown() == events[-500:]
        # (the outputs that came meanwhile were added, the oldest shown went)
        outputs = [f"left {n}" for n in range(200, 0, -1)]
        expect(console.find("output-item")).to_have_text(outputs)
        expect(console.find("event-log-note")).to_have_text(
            f"Showing events {len(events) - 499}\u2013{len(events)} of {len(events)}."
        )
        # Older events on asking, 500 at a time, none lost, none twice, in order.
        window = seen = shown()
        while older.is_visible():
            first, last = window[0], window[-1]
            older.click()
            expect(rows.last).not_to_have_attribute("data-id", str(last))
            window = shown()
            assert len(window) <= 500
            seen = window[: window.index(first) if first in window else None] + seen
        assert seen == events
        assert console.find("event-row", kind="run_started").count() == 1
        # and back to the newest, which the log follows again.
        newest.click()
        expect(rows.last).to_have_attribute("data-id", str(events[-1]))
        assert shown() == events[-500:]
        expect(older).to_be_visible()
        expect(newest).to_be_hidden()
    finally:
        flows.HOLD_AT = None


def test_a_stopped_runs_page_follows_a_resume_given_elsewhere(serve, open_console):
    # (a cancelled run resumed from another tab, or after a restart, still
    # read "cancelled" with its Resume button in every other tab, for ever)
    from .test_api import wait_for
    from .test_runs import hold_at

    server = serve(flows.counting)
    console = open_console(server.url + "/")
    try:
        with server.client() as client:
            flows.HOLD_AT = 3
            body = {"input": {"steps": 5}}
            run_id = client.post("/api/workflows/counting/runs", json=body).json()["run_id"]
            hold_at(3)
            assert client.post(f"/api/runs/{run_id}/cancel", json={}).status_code == 202
            flows.HOLD_AT = None
            wait_for(client, run_id, "cancelled")
            console.open(f"#/runs/{run_id}")
            status_of(console).to_have_text("cancelled")
            stream_ended(console)
            wait_for_outputs(console, ["left 5", "left 4"])
            assert client.post(f"/api/runs/{run_id}/resume", json={}).status_code == 202
            wait_for(client, run_id, "idle")
        # No reload: the page follows the run to its end.
        status_of(console).to_have_text("idle")
        wait_for_outputs(console, ["left 5", "left 4", "left 3", "left 2", "left 1"])
        expect(console.find("event-row", kind="output")).to_have_count(5)
    finally:
        flows.HOLD_AT = None


def test_the_runs_list_outlives_a_restart_of_its_server(serve, tmp_path, open_console):
    # (after a restart the list went on saying the server could not be
    # reached, above a list that had refreshed, and asked again only 30 s on)
    import stepgraph as sg

    path = tmp_path / "restart.sqlite"
    first = serve(flows.gate, store=sg.SqliteCheckpointStore(path))
    with first.client() as client:
        run_id = client.post("/api/workflows/gate/runs", json={"input": "go?"}).json()["run_id"]
    console = open_console(first.url + "/", refused="net::ERR")
    console.open("#/runs")
    row = console.page.locator("tr", has_text=run_id)
    expect(row).to_contain_text("idle_with_pending_requests")
    first.stop()
    console.page.get_by_label("Status").select_option("idle_with_pending_requests")
    expect(console.find("error-banner")).to_contain_text("Cannot reach")
    second = serve(flows.gate, store=sg.SqliteCheckpointStore(path), port=first.port)
    with second.client() as client:
        body = {"input": "and this?"}
        other = client.post("/api/workflows/gate/runs", json=body).json()["run_id"]
    # No reload: the list comes back, with the run started meanwhile.
    expect(console.page.locator("tr", has_text=other)).to_be_visible()
    expect(row).to_be_visible()
    expect(console.find("error-banner")).to_be_hidden()


def test_a_run_of_many_outputs_lists_its_newest_and_the_rest_on_asking(serve, open_console):
    # (a run of 10,000 outputs laid out 10,000 items at once as its page
    # opened: the page stood still for half a second)
    from .test_api import wait_for

    server = serve(flows.long_counting)
    with server.client() as client:
        body = {"input": {"steps": 450}}
        run_id = client.post("/api/workflows/long/runs", json=body).json()["run_id"]
        wait_for(client, run_id, "idle")
    console = open_console(server.url + "/")
    items, older = console.find("output-item"), console.find("outputs-older")
    console.open(f"#/runs/{run_id}")
    expect(items).to_have_count(200)
    expect(items.first).to_have_text("left 200")
    expect(items.last).to_have_text("left 1")
    expect(console.find("outputs")).to_have_attribute("start", "251")  # (numbered as the run's)
    expect(older).to_have_text("Show 200 older outputs (250 not shown)")
    # (the details hold the newest 200: the page asks for older ones, and says how many)
    expect(console.find("outputs-total")).to_contain_text("450 outputs in all")
    older.click()
    expect(items).to_have_count(400)
    older.click()
    expect(items).to_have_count(450)
    expect(older).to_be_hidden()
    texts = [f"left {n}" for n in range(450, 0, -1)]
    expect(items).to_have_text(texts)


def test_a_whole_number_past_2_to_the_53_is_sent_and_shown_exactly(serve, open_console):
    # (9007199254740993 typed in a form started a run with 9007199254740992,
    # and an output of 9007199254740993 was shown as 9007199254740992: a
    # page's numbers are doubles)
    server = serve(flows.adding, flows.tallying)
    console = open_console(server.url + "/")
    console.open("#/workflows/adding")
    steps = console.page.get_by_label("Steps")
    steps.fill("1e21")  # (the page cannot tell which whole number that is)
    console.find("start-submit").click()
    expect(console.page.locator(".field-error").first).to_contain_text("with its digits")
    steps.fill("9007199254740993")
    console.find("start-submit").click()
    run_id_of(console)
    wait_for_outputs(console, ["9007199254740995"])
    expect(console.find("event-row", kind="output")).to_contain_text("9007199254740995")
    console.open("#/workflows/tally")
    field = console.page.locator("main form textarea")
    field.fill('{"a": 9007199254740993, "b": -12345678901234567890}')
    console.find("start-submit").click()
    run_id_of(console)
    wait_for_outputs(console, ["a=9007199254740993 b=-12345678901234567890"])


def test_a_json_fields_numbers_are_sent_as_written(serve, open_console):
    # (1e400 typed in a JSON field, or in a tool call's edited arguments,
    # was sent as null — JSON.stringify's Infinity — and 1.0 as the whole
    # number 1: `stepgraph run --input` refuses the one and reads a float)
    model = agent_approval.default_model()
    server = serve(flows.echoing, lambda: agent_approval.build(model=model))
    console = open_console(server.url + "/")
    try:
        console.open("#/workflows/echo")
        field = console.page.locator("main form textarea")
        field.fill("[1, 1e400]")
        console.find("start-submit").click()
        expect(console.page.locator(".field-error").first).to_contain_text(
            "1e400 is past the largest number"
        )
        expect(field).to_have_attribute("aria-invalid", "true")
        field.fill("[1.0, -2.50, 1E3, 9007199254740993, 1.5e300]")
        console.find("start-submit").click()
        run_id_of(console)
        wait_for_outputs(console, ["[1.0, -2.5, 1000.0, 9007199254740993, 1.5e+300]"])

        console.open("#/workflows/research")
        form = console.find("start-form").first
        form.locator("input, textarea").first.fill("notes")
        form.locator('[data-testid="start-submit"]').click()
        run_id_of(console)
        edit = console.find("edit-arguments")
        edit.fill('{"to": 1e400}')
        console.find("edit-button").click()
        expect(console.page.locator(".field-error", has_text="1e400")).to_be_visible()
        expect(edit).to_have_attribute("aria-invalid", "true")
        expect(console.find("request-form")).to_have_count(1)  # (nothing was sent)
    finally:
        server.call(model.aclose)


def test_a_whole_number_past_2_to_the_53_as_a_default_fills_its_field(serve, open_console):
    # (a form's number field of default 9007199254740993 was left empty,
    # where a smaller default is filled in)
    server = serve(flows.far_off)
    console = open_console(server.url + "/")
    console.open("#/workflows/far")
    expect(console.page.get_by_role("spinbutton", name="Start")).to_have_value("9007199254740993")
    expect(console.page.get_by_role("spinbutton", name="Below")).to_have_value("-9007199254740995")
    console.find("start-submit").click()
    run_id_of(console)
    wait_for_outputs(console, ["9007199254740993 -9007199254740995"])


def test_a_float_field_shows_and_sends_a_float(serve, open_console):
    # (a float field of default 1000.0 showed 1000, and what was typed in it
    # went as a whole number: {"factor": 3} where `stepgraph run --input`
    # would be given 3.0)
    server = serve(flows.scaling)
    console = open_console(server.url + "/")
    sent: list[str] = []
    console.page.on(
        "request",
        lambda request: sent.append(request.post_data or "") if request.method == "POST" else None,
    )
    console.open("#/workflows/scale")
    factor = console.page.get_by_role("spinbutton", name="Factor")
    expect(factor).to_have_value("1000.0")
    console.find("start-submit").click()
    run_id_of(console)
    wait_for_outputs(console, ["1000.0"])
    console.open("#/workflows/scale")
    for typed, shown in (("3", "3.0"), ("-2.50", "-2.50"), ("1e21", "1e21")):
        factor.fill(typed)
        factor.blur()
        expect(factor).to_have_value(shown)
    factor.fill("3")
    factor.blur()
    expect(factor).to_have_value("3.0")
    console.find("start-submit").click()
    run_id_of(console)
    wait_for_outputs(console, ["3.0"])
    assert sent == ['{"input":{"factor":1000.0}}', '{"input":{"factor":3.0}}']


def test_fields_defaulted_by_a_factory_are_left_to_it(serve, open_console):
    # (a dict or list field of a default_factory was filled {} or [], a model
    # one ticked with its class's defaults, and sent so: the factory's value
    # was lost; a model instance as a default showed its class's defaults)
    server = serve(flows.tuning)
    console = open_console(server.url + "/")
    page = console.page
    console.open("#/workflows/tune")
    expect(page.get_by_label("Weights")).to_have_value("")
    expect(page.get_by_label("Tags")).to_have_value("")
    # (settings, fallback, fixed: three groups, in that order)
    groups = page.locator("main form fieldset fieldset")
    toggles = groups.locator("legend input[type=checkbox]")
    expect(toggles).to_have_count(3)
    expect(toggles.nth(0)).not_to_be_checked()
    expect(toggles.nth(1)).not_to_be_checked()
    expect(toggles.nth(2)).to_be_checked()
    expect(groups.nth(2).get_by_label("Retries")).to_have_value("7")
    console.find("start-submit").click()
    run_id_of(console)
    wait_for_outputs(
        console,
        [
            '{"weights":{"a":1},"tags":["x"],"settings":{"retries":5},'
            '"fallback":{"retries":6},"fixed":{"retries":7}}'
        ],
    )

    console.open("#/workflows/tune")  # (filled in, they are sent)
    page.get_by_label("Tags").fill('["y"]')
    toggles.nth(0).check()
    expect(groups.nth(0).get_by_label("Retries")).to_have_value("1")
    console.find("start-submit").click()
    run_id_of(console)
    wait_for_outputs(
        console,
        [
            '{"weights":{"a":1},"tags":["y"],"settings":{"retries":1},'
            '"fallback":{"retries":6},"fixed":{"retries":7}}'
        ],
    )


def test_a_failed_load_more_of_the_runs_list_is_cleared_once_the_server_answers(
    serve, tmp_path, open_console
):
    # ('Load more' clicked while the server was restarting left 'Cannot
    # reach the stepgraph server' above the list for good: only the list's
    # own looks took it away, and the next came 30 s on)
    import stepgraph as sg

    path = tmp_path / "restart.sqlite"
    first = serve(flows.gate, store=sg.SqliteCheckpointStore(path))
    with first.client() as client:
        for n in range(51):
            client.post("/api/workflows/gate/runs", json={"input": f"run {n}?"})
    console = open_console(first.url + "/", refused="net::ERR")
    more, banner = (
        console.page.get_by_role("button", name="Load more"),
        console.find("error-banner"),
    )
    console.open("#/runs")
    expect(console.find("run-row")).to_have_count(50)
    first.stop()
    more.click()
    expect(banner).to_contain_text("Cannot reach")
    serve(flows.gate, store=sg.SqliteCheckpointStore(path), port=first.port)
    expect(banner).to_be_hidden()  # (within 15 s: well before the list's quiet look)
    more.click()
    expect(console.find("run-row")).to_have_count(51)


def test_a_failed_actions_banner_goes_once_the_server_answers_again(
    serve, monkeypatch, open_console
):
    # (a Cancel that could not reach the server, back by the page's next
    # look, left 'Cannot reach the stepgraph server' above a live run for
    # good — an answer too: only a look of the page's own that failed was
    # taken back)
    monkeypatch.setattr(flows, "STEP", 0.05)
    server = serve(flows.slow, flows.gate)
    with server.client() as client:
        going = client.post("/api/workflows/slow/runs", json={"input": {"steps": 2000}})
        run_id = going.json()["run_id"]
        waiting = client.post("/api/workflows/gate/runs", json={"input": "go?"}).json()["run_id"]
    console = open_console(server.url + "/", refused="net::ERR")
    cancel, banner = re.compile(rf"/api/runs/{run_id}/cancel$"), console.find("error-banner")
    console.open(f"#/runs/{run_id}")
    console.page.locator(".tag-live").wait_for()
    console.page.route(cancel, lambda route: route.abort())  # (away for that call only)
    console.find("cancel-button").click()
    expect(banner).to_contain_text("Cannot reach")
    console.page.unroute(cancel)
    expect(banner).to_be_hidden()
    status_of(console).to_have_text("in_progress")  # (nothing was cancelled)
    # (a failure of the server, not an outage, stays said)
    details = re.compile(rf"/api/runs/{run_id}$")
    failed = '{"error": "the server failed on this request (see the server\'s log)"}'
    console.page.route(cancel, lambda route: route.fulfill(status=500, body=failed))
    console.find("cancel-button").click()
    expect(banner).to_contain_text("the server failed on this request")
    for _ in range(2):
        with console.page.expect_response(details):
            pass
    expect(banner).to_contain_text("the server failed on this request")
    console.page.unroute(cancel)
    console.errors.remove(  # (the one this test made up)
        "Failed to load resource: the server responded with a status of 500 (Internal Server Error)"
    )
    console.find("cancel-button").click()
    status_of(console).to_have_text("cancelled")

    answers = re.compile(rf"/api/runs/{waiting}/responses$")
    console.open(f"#/runs/{waiting}")
    yes = console.find("request-form").get_by_role("button", name=re.compile("^yes$", re.I))
    console.page.route(answers, lambda route: route.abort())
    yes.click()
    expect(banner).to_contain_text("Cannot reach")
    console.page.unroute(answers)
    expect(banner).to_be_hidden()
    yes.click()
    console.find("output-item").wait_for()


def test_the_event_log_holds_still_while_read_scrolled_up_from_its_newest_rows(serve, open_console):
    # (a reader scrolled up in the log of a run going on had the rows read
    # cut from under them, the window moving on to the newest hundreds of
    # times a second)
    from .conftest import sse
    from .test_api import wait_for
    from .test_runs import hold_at

    server = serve(flows.long_counting)
    console = open_console(server.url + "/")
    rows, log = console.find("event-row"), console.find("event-log")
    newer = console.find("event-log-newer")

    def shown() -> list[int]:
        return [
            int(i)
            for i in console.page.eval_on_selector_all(
                '[data-testid="event-row"]', "rows => rows.map(row => row.dataset.id)"
            )
        ]

    try:
        with server.client() as client:
            body = {"input": {"steps": 900}}
            # (held from its start: its 100 supersteps to the hold took less
            # than the answer to the start, and it went past the hold)
            flows.HOLD_AT = 800
            run_id = client.post("/api/workflows/long/runs", json=body).json()["run_id"]
            hold_at(800)  # (going on, some 500 events so far)
            console.open(f"#/runs/{run_id}")
            expect(rows).to_have_count(500)
            log.evaluate("list => { list.scrollTop = 0; }")
            expect(log).to_have_js_property("scrollTop", 0)
            read = shown()
            flows.HOLD_AT = 400  # (some 2,000 events more)
            hold_at(400)
            # The rows being read stay; the events since wait behind "Show newer".
            expect(newer).to_be_visible()
            assert shown() == read
            # Scrolled back down, the log follows the run again, to its end.
            log.evaluate("list => { list.scrollTop = list.scrollHeight; }")
            flows.HOLD_AT = None
            wait_for(client, run_id, "idle")
            events = [e["id"] for e in sse(client, run_id) if e["kind"] != "end"]
        expect(rows.last).to_have_attribute("data-id", str(events[-1]))
        assert shown() == events[-500:]
        expect(newer).to_be_hidden()
    finally:
        flows.HOLD_AT = None


def test_fields_of_one_model_type_are_told_apart(serve, open_console):
    # (source and target were both labelled by their model's title, "Place":
    # a field of a model type has no title of its own in the schema)
    server = serve(flows.travelling)
    console = open_console(server.url + "/")
    console.open("#/workflows/trip")
    legends = console.page.locator("main form fieldset fieldset legend")
    expect(legends).to_have_text(["Source", re.compile(r"^\s*Target \(optional")])
    expect(console.page.get_by_label("Return Too")).to_have_count(1)


def test_a_yes_no_field_whose_default_is_not_yes_or_no_is_left_to_it(serve, open_console):
    # (a yes/no whose default a factory makes, or whose default is None, was
    # a checkbox that sent false in its stead)
    server = serve(flows.travelling)
    console = open_console(server.url + "/")
    page = console.page
    console.open("#/workflows/trip")
    direct = page.get_by_label(re.compile("^direct", re.I))
    both_ways = page.get_by_label(re.compile("^return.too", re.I))
    expect(direct).to_have_value("")
    expect(both_ways).to_have_value("")
    console.find("start-submit").click()
    run_id_of(console)
    wait_for_outputs(
        console,
        ['{"source":{"city":"Lyon"},"target":{"city":"Oslo"},"direct":true,"return_too":null}'],
    )

    console.open("#/workflows/trip")  # (chosen, they are sent)
    direct.select_option("no")
    both_ways.select_option("yes")
    console.find("start-submit").click()
    run_id_of(console)
    wait_for_outputs(
        console,
        ['{"source":{"city":"Lyon"},"target":{"city":"Oslo"},"direct":false,"return_too":true}'],
    )


def test_the_runs_list_says_how_often_it_refreshes(serve, open_console):
    # (it said "every 3 seconds" while no run it listed went on: it then
    # looks every 30 s, so a run started elsewhere took up to 30 s to show)
    server = serve(flows.gate)
    with server.client() as client:
        run_id = client.post("/api/workflows/gate/runs", json={"input": "q"}).json()["run_id"]
    console = open_console(server.url + "/")
    console.open("#/runs")
    console.find("run-row", run_id=run_id).wait_for()
    note = console.find("runs-refresh-note")
    expect(note).to_contain_text("3 seconds while a run it lists goes on")
    expect(note).to_contain_text("every 30 seconds otherwise")


def _loaded(serve, open_console):
    """The console of a server of the test flows, loaded: for a test of its
    modules' functions in the page."""
    console = open_console(serve().url + "/")
    console.open("#/workflows")
    console.find("workflow-card", name="gate").wait_for()
    return console


def test_the_timeline_gives_each_map_item_its_own_duration(serve, open_console):
    # (a start was matched to a finish by path and superstep, first in first
    # out: map items finish in any order, so an item that finished first was
    # given the duration of the one that started first)
    console = _loaded(serve, open_console)
    calls = console.page.evaluate(
        """async () => {
          const m = await import("/static/js/run-model.js");
          const model = m.newRunModel();
          const ev = (kind, item, time, extra = {}) => ({
            kind, item, time, executor_id: "pages", path: "pages", superstep: 2, workflow_path: [], ...extra,
          });
          m.modelInvoked(model, ev("executor_invoked", 0, 10));
          m.modelInvoked(model, ev("executor_invoked", 1, 10));
          m.modelInvoked(model, ev("executor_invoked", 2, 10));
          m.modelFinished(model, ev("executor_completed", 2, 10.05, { duration: 0.05 }), false);
          m.modelFinished(model, ev("executor_failed", 0, 10.1, { duration: 0.1 }), true);
          m.modelFinished(model, ev("executor_completed", 1, 10.3, { duration: 0.3 }), false);
          return model.calls.map((c) => [c.item, Math.round((c.end - c.start) * 1000), c.failed]);
        }"""
    )
    assert calls == [[0, 100, True], [1, 300, False], [2, 50, False]]


def test_a_maps_agents_each_get_their_own_text_and_tool_lines(serve, open_console):
    # (a map's items share its path, their turns and their tool call ids,
    # call_0-<run>: the agents panel ran every item's text into one turn and
    # every item's call into one line, "requested → started → requested...")
    console = _loaded(serve, open_console)
    panels = console.page.evaluate(
        """async () => {
          const m = await import("/static/js/outputs.js");
          const panel = m.agentPanel();
          const ev = (kind, item, extra) => ({
            kind, item, executor_id: "drafts", path: "drafts", superstep: 2, workflow_path: [],
            ...extra,
          });
          for (const item of [0, 1]) {
            panel.delta(ev("agent_delta", item, { text: `draft ${item}`, turn: 1, attempt: 1 }));
            for (const status of ["requested", "started", "finished"]) {
              panel.tool(ev("tool_call", item, { call_id: "call_0-1c4d7511", tool: "search", status }));
            }
          }
          return [...panel.node.querySelectorAll('[data-testid="agent-text"]')].map((a) => [
            a.dataset.path,
            [...a.querySelectorAll(".agent-turn")].map((t) => t.textContent),
            [...a.querySelectorAll(".tool-line .tool-status")].map((t) => t.textContent),
          ]);
        }"""
    )
    assert panels == [
        ["drafts[0]", ["draft 0"], ["requested → started → finished"]],
        ["drafts[1]", ["draft 1"], ["requested → started → finished"]],
    ]
