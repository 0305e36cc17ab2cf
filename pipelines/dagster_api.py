"""A small client of the Dagster webserver's GraphQL API: the calls the UI makes.

`make run` and the end-to-end tests launch work the way a user of the UI
does: a backfill ("Materialize" over partitions), a run of every asset for
one partition ("Materialize all" with one partition selected), a sensor
switched on. Everything goes through the webserver, so the daemon, the run
queue and the pools treat it exactly as they treat the UI's requests.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import dataclass

ASSET_JOB = "__ASSET_JOB"
BACKFILL_TAG = "dagster/backfill"
PARTITION_TAG = "dagster/partition"
# Backfill states after which nothing more will run.
BACKFILL_DONE = {"COMPLETED", "COMPLETED_SUCCESS", "COMPLETED_FAILED", "FAILED", "CANCELED"}
RUN_DONE = {"SUCCESS", "FAILURE", "CANCELED"}
# The message of a run failure Dagster records without a reason of its own.
RUN_FAILED_OUTSIDE = "This run has been marked as failed from outside the execution context"

# What an answer may be instead of success: every result type has these two.
ERRORS = """
  __typename
  ... on PythonError { message className }
  ... on Error { message }
"""
# Launches may also be refused for their config or their selection.
LAUNCH_ERRORS = ERRORS + """
  ... on RunConfigValidationInvalid { errors { message } }
  ... on InvalidStepError { invalidStepKey }
  ... on InvalidOutputError { stepKey invalidOutputName }
"""


def exception_text(class_name: str | None, message: str) -> str:
    """`ValueError: lr must be positive`: Dagster's messages already start with the class name, mostly."""
    message = message.strip()
    return message if not class_name or message.startswith(f"{class_name}:") else f"{class_name}: {message}"


class DagsterApiError(RuntimeError):
    """The webserver answered with an error (or not at all)."""


@dataclass(frozen=True)
class RunSummary:
    run_id: str
    status: str
    partition: str | None
    assets: tuple[str, ...]
    start_time: float | None
    end_time: float | None

    @property
    def seconds(self) -> float | None:
        return self.end_time - self.start_time if self.start_time and self.end_time else None


@dataclass(frozen=True)
class BackfillProgress:
    status: str
    # Targeted assets (or partitions) neither launched yet nor skipped for a failed parent, as the
    # daemon last recorded them: 0 once it has launched its last runs.
    unlaunched: int


class DagsterApi:
    """GraphQL calls against one webserver (`http://127.0.0.1:3000`, say) and its one code location."""

    def __init__(self, url: str, timeout: float = 60):
        self.url = url.rstrip("/")
        self.timeout = timeout

    def query(self, text: str, variables: dict | None = None) -> dict:
        body = json.dumps({"query": text, "variables": variables or {}}).encode()
        request = urllib.request.Request(f"{self.url}/graphql", data=body,
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                answer = json.loads(response.read())
        except urllib.error.HTTPError as error:  # a refused query: GraphQL says why in the body
            try:
                answer = json.loads(error.read())
            except ValueError:
                raise DagsterApiError(f"the Dagster webserver at {self.url} answered {error}") from error
        except (urllib.error.URLError, OSError) as error:
            raise DagsterApiError(f"no answer from the Dagster webserver at {self.url}: {error}") from error
        if answer.get("errors"):
            raise DagsterApiError("; ".join(e.get("message", str(e)) for e in answer["errors"]))
        return answer["data"]

    def is_up(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/server_info", timeout=5) as response:
                return response.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def repository(self) -> dict:
        """{repositoryLocationName, repositoryName} of the one loaded code location; raises if it failed to load."""
        data = self.query("""{ workspaceOrError { __typename ... on Workspace { locationEntries {
            name locationOrLoadError { __typename
              ... on RepositoryLocation { repositories { name } }
              ... on PythonError { message } } } } } }""")
        for entry in data["workspaceOrError"].get("locationEntries", []):
            location = entry["locationOrLoadError"] or {}
            if location.get("__typename") == "PythonError":
                raise DagsterApiError(f"code location {entry['name']} failed to load: {location['message']}")
            if location.get("repositories"):
                return {"repositoryLocationName": entry["name"], "repositoryName": location["repositories"][0]["name"]}
        raise DagsterApiError("the webserver has no loaded code location yet")

    @staticmethod
    def _check(result: dict, success: str) -> dict:
        if result["__typename"] != success:
            detail = result.get("message") or result.get("errors") or result
            raise DagsterApiError(f"{result['__typename']}: {detail}")
        return result

    def launch_backfill(self, asset_keys: list[str], partitions: list[str], run_config: dict | None = None,
                        tags: dict | None = None, title: str | None = None) -> str:
        """A backfill of these assets over these partitions (the UI's Materialize with a partition range)."""
        params = {"assetSelection": [{"path": [key]} for key in asset_keys], "partitionNames": partitions,
                  "runConfigData": run_config or {}, "tags": [{"key": k, "value": v} for k, v in (tags or {}).items()]}
        if title:
            params["title"] = title
        data = self.query(f"""mutation($params: LaunchBackfillParams!) {{
            launchPartitionBackfill(backfillParams: $params) {{
              ... on LaunchBackfillSuccess {{ backfillId }} {LAUNCH_ERRORS} }} }}""", {"params": params})
        return self._check(data["launchPartitionBackfill"], "LaunchBackfillSuccess")["backfillId"]

    def launch_assets_run(self, asset_keys: list[str], partition: str | None = None,
                          run_config: dict | None = None, tags: dict | None = None) -> str:
        """One run of these assets (the UI's Materialize all, with one partition selected if given)."""
        all_tags = {**(tags or {}), **({PARTITION_TAG: partition} if partition else {})}
        params = {"selector": {**self.repository(), "pipelineName": ASSET_JOB,
                               "assetSelection": [{"path": [key]} for key in asset_keys]},
                  "runConfigData": run_config or {}, "mode": "default",
                  "executionMetadata": {"tags": [{"key": k, "value": v} for k, v in all_tags.items()]}}
        data = self.query(f"""mutation($params: ExecutionParams!) {{
            launchPipelineExecution(executionParams: $params) {{
              ... on LaunchRunSuccess {{ run {{ runId }} }} {LAUNCH_ERRORS} }} }}""", {"params": params})
        return self._check(data["launchPipelineExecution"], "LaunchRunSuccess")["run"]["runId"]

    def backfill_status(self, backfill_id: str) -> str:
        return self.backfill_progress(backfill_id).status

    def backfill_progress(self, backfill_id: str) -> "BackfillProgress":
        """The backfill's state and how many of its targets the daemon has yet to launch."""
        data = self.query("""query($id: String!) { partitionBackfillOrError(backfillId: $id) {
            __typename ... on PartitionBackfill { status assetBackfillData { assetBackfillStatuses { __typename
              ... on AssetPartitionsStatusCounts { numPartitionsTargeted numPartitionsInProgress
                                                   numPartitionsMaterialized numPartitionsFailed }
              ... on UnpartitionedAssetStatus { inProgress materialized failed } } } }
            ... on Error { message } } }""", {"id": backfill_id})
        backfill = self._check(data["partitionBackfillOrError"], "PartitionBackfill")
        unlaunched = 0
        for asset in (backfill.get("assetBackfillData") or {}).get("assetBackfillStatuses", []):
            if asset["__typename"] == "AssetPartitionsStatusCounts":
                unlaunched += asset["numPartitionsTargeted"] - asset["numPartitionsInProgress"] \
                    - asset["numPartitionsMaterialized"] - asset["numPartitionsFailed"]
            else:
                unlaunched += not (asset["inProgress"] or asset["materialized"] or asset["failed"])
        return BackfillProgress(backfill["status"], unlaunched)

    def unfinished_backfills(self) -> list[dict]:
        """Backfills still being worked on: [{id, tags: {key: value}}]."""
        data = self.query("""{ partitionBackfillsOrError(status: REQUESTED) { __typename
            ... on PartitionBackfills { results { id tags { key value } } } ... on Error { message } } }""")
        results = self._check(data["partitionBackfillsOrError"], "PartitionBackfills")["results"]
        return [{"id": b["id"], "tags": {t["key"]: t["value"] for t in b["tags"]}} for b in results]

    def cancel_backfill(self, backfill_id: str) -> None:
        data = self.query(f"""mutation($id: String!) {{ cancelPartitionBackfill(backfillId: $id) {{
              ... on CancelBackfillSuccess {{ backfillId }} {ERRORS} }} }}""", {"id": backfill_id})
        self._check(data["cancelPartitionBackfill"], "CancelBackfillSuccess")

    def runs(self, tags: dict[str, str] | None = None, limit: int = 500,
             statuses: list[str] | None = None) -> list[RunSummary]:
        """Runs (newest first), optionally only those carrying all these tags, or in these states."""
        data = self.query("""query($filter: RunsFilter, $limit: Int) { runsOrError(filter: $filter, limit: $limit) {
            __typename ... on Runs { results { runId status startTime endTime tags { key value }
                                                assetSelection { path } } } ... on Error { message } } }""",
                          {"filter": {"tags": [{"key": k, "value": v} for k, v in (tags or {}).items()],
                                      **({"statuses": statuses} if statuses else {})}, "limit": limit})
        results = self._check(data["runsOrError"], "Runs")["results"]
        return [RunSummary(r["runId"], r["status"], next((t["value"] for t in r["tags"] if t["key"] == PARTITION_TAG), None),
                           tuple("/".join(a["path"]) for a in r["assetSelection"] or []), r["startTime"], r["endTime"])
                for r in results]

    def run_status(self, run_id: str) -> str:
        data = self.query("""query($id: ID!) { runOrError(runId: $id) {
            __typename ... on Run { status } ... on Error { message } } }""", {"id": run_id})
        return self._check(data["runOrError"], "Run")["status"]

    def failure_reasons(self, run_id: str) -> list[str]:
        """Why a run failed, as make run prints it: `step: ExceptionClass: message` for each failed step,
        from the error that caused it; for a run that failed outside its steps (its process killed, its
        code not loaded, a worker that never started), the run's own failure and the errors logged with it."""
        data = self.query("""query($id: ID!) { logsForRun(runId: $id, limit: 5000) { __typename
            ... on EventConnection { events { __typename
              ... on MessageEvent { message }
              ... on ErrorEvent { error { className message causes { className message } } }
              ... on ExecutionStepFailureEvent { stepKey } } } ... on Error { message } } }""", {"id": run_id})
        events = self._check(data["logsForRun"], "EventConnection")["events"]
        steps, run_errors, run_messages = [], [], []
        engine_message = None
        for event in events:
            error = event.get("error")
            text = None
            if error:
                error = (error.get("causes") or [error])[-1]  # the code's own exception, not Dagster's wrapper
                text = exception_text(error["className"], error["message"])
            message = (event.get("message") or "").strip()
            if event["__typename"] == "ExecutionStepFailureEvent":
                if text:
                    steps.append(f"{event['stepKey']}: {text}")
            elif text:
                run_errors.append(text)
            elif event["__typename"] == "RunFailureEvent":
                # Dagster's own failure of a crashed run says only this; the engine event it logged
                # just before says what happened ("... was terminated by signal 9 (SIGKILL).").
                generic = not message or message.startswith(RUN_FAILED_OUTSIDE)
                if generic and engine_message:
                    message = engine_message
                run_messages.append(message or RUN_FAILED_OUTSIDE)
            engine_message = message if event["__typename"] == "EngineEvent" else None
        return steps or list(dict.fromkeys(run_errors + run_messages))
