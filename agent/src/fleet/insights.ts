/** Running one Logs Insights query through the SDK: StartQuery, then GetQueryResults until it ends. */
import { GetQueryResultsCommand, StartQueryCommand, type CloudWatchLogsClient } from '@aws-sdk/client-cloudwatch-logs';

export type Row = Record<string, string>;

export interface QueryRun {
  logGroup: string;
  /** Epoch milliseconds. */
  start: number;
  end: number;
  query: string;
  name: string;
  pollMs: number;
  timeoutMs: number;
  progress(line: string): void;
}

/** The rows of a finished query, as {field: value} (the `@ptr` field left out). */
export function rowsOf(results: Array<Array<{ field?: string; value?: string }>> | undefined): Row[] {
  return (results ?? []).map((r) => {
    const row: Row = {};
    for (const f of r) if (f.field && f.field !== '@ptr' && f.value !== undefined) row[f.field] = f.value;
    return row;
  });
}

export async function runInsightsQuery(client: CloudWatchLogsClient, q: QueryRun): Promise<Row[]> {
  const started = Date.now();
  const { queryId } = await client.send(new StartQueryCommand({
    logGroupName: q.logGroup, startTime: Math.floor(q.start / 1000), endTime: Math.ceil(q.end / 1000), queryString: q.query,
  }));
  if (!queryId) throw new Error(`StartQuery (${q.name}) returned no query id`);
  let last = '';
  for (;;) {
    const r = await client.send(new GetQueryResultsCommand({ queryId }));
    const status = r.status ?? 'Unknown';
    const scanned = r.statistics?.recordsScanned ?? 0;
    const line = `imds-tracer fleet: ${q.name} query ${status}: ${Math.round(scanned).toLocaleString('en-US')} records scanned, ${Math.round(r.statistics?.recordsMatched ?? 0).toLocaleString('en-US')} matched (${Math.round((Date.now() - started) / 1000)} s)`;
    if (line !== last) { q.progress(line); last = line; }
    if (status === 'Complete') return rowsOf(r.results);
    if (status === 'Failed' || status === 'Cancelled' || status === 'Timeout') throw new Error(`the ${q.name} query ended ${status}`);
    if (Date.now() - started > q.timeoutMs) throw new Error(`the ${q.name} query did not finish in ${Math.round(q.timeoutMs / 1000)} s`);
    await new Promise((r2) => setTimeout(r2, q.pollMs));
  }
}
