"""The shipped alerting rules and Grafana dashboard, proven with the real tools: promtool checks and
unit-tests every rule, and a real Prometheus scraping a real server evaluates every expression of
every rule and every dashboard panel, failing on a parse error, an unknown metric or a label no
series has."""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import ROOT, WAIT_S, Api, prepare, run_speaker, start_server, wait_until

PROMTOOL = shutil.which("promtool")
PROMETHEUS = shutil.which("prometheus")
CONF = ROOT / "conf"
RULES = CONF / "prometheus" / "alerts.yml"
RULE_TESTS = CONF / "prometheus" / "alerts_test.yml"
DASHBOARD = CONF / "grafana" / "broadcaster.json"
DATASOURCE_UID = "broadcaster-prometheus"
# Grafana's variables, as Grafana would fill them for "All" over a short range.
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__range": "5m", "$channel": ".*", "$zone": ".*"}
METRIC = re.compile(r"(?<![\w:$.\"'])((?:broadcaster_[a-z0-9_]+)|up)\b\s*(\{[^}]*\})?(?!\s*\()")
MATCHER = re.compile(r"([a-zA-Z_]\w*)\s*(?:=~|!~|!=|=)")
GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")

pytestmark = pytest.mark.skipif(PROMTOOL is None or PROMETHEUS is None,
                                reason="prometheus (with promtool) is installed by `make test`")


def rules() -> list[dict[str, Any]]:
    document = yaml.safe_load(RULES.read_text(encoding="utf-8"))
    return [rule for group in document["groups"] for rule in group["rules"]]


def dashboard() -> dict[str, Any]:
    return dict(json.loads(DASHBOARD.read_text(encoding="utf-8")))


def panel_expressions() -> list[tuple[str, str]]:
    found = []
    for panel in dashboard()["panels"]:
        for target in panel.get("targets", []):
            found.append((f"panel {panel['title']!r} {target['refId']}", target["expr"]))
    for variable in dashboard()["templating"]["list"]:
        # label_values(metric, label): Grafana's own function, over a metric and a label of it
        match = re.fullmatch(r"label_values\((\w+),\s*(\w+)\)", variable["definition"])
        assert match, variable["definition"]
        found.append((f"variable {variable['name']!r}", f"count by ({match.group(2)}) ({match.group(1)})"))
    return found


def test_promtool_checks_the_rules_and_passes_their_unit_tests() -> None:
    checked = subprocess.run([str(PROMTOOL), "check", "rules", str(RULES)], capture_output=True, text=True,
                             timeout=60)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"SUCCESS: {len(rules())} rules found" in checked.stdout
    tested = subprocess.run([str(PROMTOOL), "test", "rules", str(RULE_TESTS)], capture_output=True, text=True,
                            timeout=120, cwd=RULE_TESTS.parent)
    assert tested.returncode == 0, tested.stdout + tested.stderr


def test_every_rule_has_a_test_that_fires_it_and_a_summary_in_both_languages() -> None:
    tests = yaml.safe_load(RULE_TESTS.read_text(encoding="utf-8"))["tests"]
    fired = {check["alertname"] for case in tests for check in case.get("alert_rule_test", [])
             if check.get("exp_alerts")}
    for rule in rules():
        assert rule["alert"] in fired, f"{rule['alert']} has no promtool test that fires it"
        annotations = rule["annotations"]
        assert annotations.get("summary") and annotations.get("summary_en"), rule["alert"]
        assert re.search(r"[àáảãạăâđêôơưếềệốồộớờợứừựấầậắằặ]", annotations["summary"]), (
            f"{rule['alert']}: the summary should be Vietnamese")


def test_the_dashboard_has_grafanas_fields_and_one_datasource() -> None:
    board = dashboard()
    assert board["uid"] and board["title"] and board["schemaVersion"] >= 30
    assert {v["name"] for v in board["templating"]["list"]} == {"zone", "channel"}
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))
    for panel in board["panels"]:
        assert {"type", "title", "gridPos", "id"} <= panel.keys(), panel
        assert set(panel["gridPos"]) == {"h", "w", "x", "y"} and panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == DATASOURCE_UID and panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["refId"] and target["expr"] and target["datasource"]["uid"] == DATASOURCE_UID
    provisioned = yaml.safe_load((CONF / "grafana" / "provisioning" / "datasources" / "broadcaster.yaml").read_text())
    assert [d["uid"] for d in provisioned["datasources"]] == [DATASOURCE_UID]
    providers = yaml.safe_load((CONF / "grafana" / "provisioning" / "dashboards" / "broadcaster.yaml").read_text())
    assert providers["providers"][0]["type"] == "file"
    titles = " ".join(p["title"] for p in board["panels"])
    for needed in ("on air by class", "Loudspeakers online by commune", "Tick lateness", "Ticks missed",
                   "Encode time", "Live buffer", "Relay", "Packets out", "Send errors", "HTTP listeners",
                   "Slow-listener", "Rejected datagrams", "Failed sign-ins", "Refused uploads and CAP",
                   "Flush errors", "Pending rows"):
        assert needed in titles, needed


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def prometheus_get(port: int, path: str, **params: Any) -> Any:
    url = f"http://127.0.0.1:{port}{path}?" + urllib.parse.urlencode(params, doseq=True)
    try:
        with urllib.request.urlopen(url, timeout=10) as reply:
            return json.loads(reply.read())
    except urllib.error.HTTPError as exc:  # a bad query is a 400 with a JSON body
        return json.loads(exc.read())


def declared_labels() -> dict[str, set[str]]:
    """Label names of every metric the server declares (a labelled counter has no series until it
    counts something, but its labels are the server's all the same)."""
    from broadcaster import metrics

    declared: dict[str, set[str]] = {}
    for registry in (metrics.REGISTRY, metrics.CORE_REGISTRY):
        for collector in list(registry._collector_to_names):
            names = getattr(collector, "_labelnames", None)
            for name in registry._collector_to_names[collector]:
                declared[name] = set(names or ())
    return declared


def substituted(expression: str) -> str:
    for variable, value in GRAFANA_VARIABLES.items():
        expression = expression.replace(variable, value)
    return expression


def test_every_expression_runs_on_a_real_prometheus_scraping_a_real_server(tmp_path: Path) -> None:
    config, tokens = prepare(tmp_path)
    server = start_server(config)
    api = Api(server, config, tokens)
    port = free_port()
    scrape = yaml.safe_load((CONF / "prometheus" / "prometheus.yml").read_text())
    scrape["global"].update(scrape_interval="1s", evaluation_interval="1s")
    scrape["scrape_configs"][0]["scrape_interval"] = "1s"
    scrape["scrape_configs"][0]["static_configs"][0]["targets"] = [f"127.0.0.1:{server.http_port}"]
    shutil.copy(RULES, tmp_path / "alerts.yml")
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(scrape))
    process = subprocess.Popen(
        [str(PROMETHEUS), f"--config.file={tmp_path / 'prometheus.yml'}", f"--storage.tsdb.path={tmp_path / 'data'}",
         f"--web.listen-address=127.0.0.1:{port}"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    listener = threading.Thread(target=run_speaker, args=(server, "spk-1", 25.0))
    try:
        # Make the server count what the rules and panels look at: a loudspeaker online, an alert on
        # air with its acknowledgements, a refused datagram, a wrong token, refused uploads and CAP.
        listener.start()
        assert wait_until(lambda: api("GET", "/api/v1/loudspeakers/spk-1")[1].get("online") is True)
        status, alert = api("POST", "/api/v1/alerts", body={
            "title": "Thử cảnh báo", "zones": ["commune-a"], "repeat": 5, "text": "Đây là bản tin thử nghiệm."})
        assert status == 201, alert
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.sendto(b"not a loudspeaker", ("127.0.0.1", server.udp_port))
        assert api("GET", "/api/v1/zones", who="bct_wrong")[0] == 401
        assert api("POST", "/api/v1/media?zone=commune-a&title=x", who="op-a", raw=b"garbage" * 100)[0] == 422
        assert api("POST", "/api/v1/alerts/cap", raw=b"<not-cap/>")[0] in (400, 422)

        def scraped_alert() -> bool:
            found = prometheus_get(port, "/api/v1/query", query='broadcaster_alert_loudspeakers{state="commanded"}')
            return found.get("status") == "success" and bool(found["data"]["result"])

        assert wait_until(scraped_alert, 40), process.stderr.read() if process.poll() is not None else "no scrape"
        time.sleep(3)  # a few more scrapes: rates need two samples
        names = set(prometheus_get(port, "/api/v1/label/__name__/values")["data"])
        for family in prometheus_get(port, "/api/v1/metadata")["data"]:
            names |= {family + suffix for suffix in ("", "_bucket", "_count", "_sum", "_total", "_created")}
        declared = declared_labels()
        problems = []
        expressions = [(f"rule {r['alert']}", r["expr"]) for r in rules()] + panel_expressions()
        for where, expression in expressions:
            text = substituted(expression)
            result = prometheus_get(port, "/api/v1/query", query=text)
            if result.get("status") != "success":
                problems.append(f"{where}: {result.get('error')}")
                continue
            used = METRIC.findall(text)
            assert used, f"{where}: no metric found in {text!r}"
            known_labels = {"__name__", "job", "instance"}
            for name, matchers in used:
                if name not in names:
                    problems.append(f"{where}: unknown metric {name}")
                    continue
                series = prometheus_get(port, "/api/v1/labels", **{"match[]": name})
                known_labels |= set(series.get("data") or [])
                family = re.sub(r"_(bucket|count|sum|total|created)$", "", name)
                known_labels |= declared.get(name, set()) | declared.get(family, set())
                if name.endswith("_bucket"):
                    known_labels.add("le")
                for label in MATCHER.findall(matchers or ""):
                    if label not in known_labels:
                        problems.append(f"{where}: {name} has no label {label!r}")
            for group in GROUPING.findall(text):
                for label in filter(None, (part.strip() for part in group.split(","))):
                    if label not in known_labels:
                        problems.append(f"{where}: no series here has the label {label!r} it groups by")
        assert problems == [], "\n".join(problems)

        # Prometheus loaded the shipped rules and evaluates each without error.
        def rules_evaluated() -> bool:
            groups = prometheus_get(port, "/api/v1/rules")["data"]["groups"]
            loaded = [r for g in groups for r in g["rules"]]
            return len(loaded) == len(rules()) and all(r.get("lastEvaluation", "").startswith("2") and
                                                       not r["lastEvaluation"].startswith("0001") for r in loaded)

        assert wait_until(rules_evaluated, WAIT_S)
        loaded = [r for g in prometheus_get(port, "/api/v1/rules")["data"]["groups"] for r in g["rules"]]
        assert {r["name"] for r in loaded} == {r["alert"] for r in rules()}
        assert all(r["health"] == "ok" for r in loaded), [(r["name"], r.get("lastError")) for r in loaded]
        api("POST", f"/api/v1/alerts/{alert['id']}/cancel")
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
        listener.join()
        server.stop()
