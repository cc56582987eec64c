/**
 * The Logs Insights queries behind `imds-tracer fleet` (one row per log stream — the instance id by
 * default — and caller). Kept here, verbatim, so docs/cloudwatch.md and the tests use the same text.
 */
export const FLEET_QUERIES = {
  /** IMDSv1 callers per instance, with the latest call's SDK advice (and User-Agent, for records written before `sdk`). */
  callers: `filter event = "imds_call" and imds_version = "v1"
| fields coalesce(process.exe, process.comm, "(caller not identified)") as executable
| stats count(*) as calls, max(@timestamp) as last_seen, latest(sdk.name) as sdk_name, latest(sdk.version) as sdk_version,
    latest(sdk.advice) as advice, latest(request.user_agent) as user_agent by @logStream as instance, executable
| sort calls desc
| limit 10000`,
  /** IMDSv1 calls answered 401 (tokens already required: the MetadataNoTokenRejected callers). */
  rejected: `filter event = "imds_call" and imds_version = "v1" and response.status = 401
| fields coalesce(process.exe, process.comm, "(caller not identified)") as executable
| stats count(*) as rejected by @logStream as instance, executable
| limit 10000`,
  /** What was traced: the first and last record of any kind per instance. */
  coverage: `stats min(@timestamp) as first_record, max(@timestamp) as last_record, count(*) as records by @logStream as instance
| limit 10000`,
  /** Calls whose version could not be read (`imds_version: null` with a `wire_reason`): they block readiness. */
  unreadable: `filter event = "imds_call" and ispresent(wire_reason)
| stats count(*) as unreadable by @logStream as instance
| limit 10000`,
} as const;

export type FleetQueryName = keyof typeof FLEET_QUERIES;
