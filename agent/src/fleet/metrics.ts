/**
 * AWS's own counter of IMDSv1 calls: the `MetadataNoToken` metric (namespace AWS/EC2, dimension
 * InstanceId: IMDS calls answered without a token), summed over the window, per instance, through
 * GetMetricData (at most 500 queries per request; pages followed).
 */
import { GetMetricDataCommand, type CloudWatchClient, type MetricDataQuery } from '@aws-sdk/client-cloudwatch';

export const INSTANCE_ID = /^i-[0-9a-f]{8,17}$/;

/**
 * A period (seconds) that covers the window in at most 1,440 points and that CloudWatch accepts for
 * data that old: a multiple of 300 (the metric's own 5-minute resolution; required past 15 days),
 * of 3600 when the window reaches back more than 63 days.
 */
export function periodFor(windowMs: number, startAgeMs = windowMs): number {
  const step = startAgeMs > 63 * 86400_000 ? 3600 : 300;
  return Math.max(step, Math.ceil(windowMs / 1000 / 1440 / step) * step);
}

/** Sum of MetadataNoToken per instance id; an instance CloudWatch has no data for sums to 0. */
export async function metadataNoToken(client: CloudWatchClient, instanceIds: string[], start: number, end: number)
  : Promise<Map<string, number>> {
  const out = new Map<string, number>();
  const period = periodFor(end - start, Date.now() - start);
  for (let i = 0; i < instanceIds.length; i += 500) {
    const chunk = instanceIds.slice(i, i + 500);
    const queries: MetricDataQuery[] = chunk.map((id, k) => ({
      Id: `m${k}`, ReturnData: true,
      MetricStat: {
        Metric: { Namespace: 'AWS/EC2', MetricName: 'MetadataNoToken', Dimensions: [{ Name: 'InstanceId', Value: id }] },
        Period: period, Stat: 'Sum',
      },
    }));
    for (const id of chunk) out.set(id, 0);
    let next: string | undefined;
    do {
      const r = await client.send(new GetMetricDataCommand({
        MetricDataQueries: queries, StartTime: new Date(start), EndTime: new Date(end), NextToken: next,
      }));
      for (const res of r.MetricDataResults ?? []) {
        const k = Number((res.Id ?? '').slice(1));
        const id = chunk[k];
        if (id === undefined) continue;
        out.set(id, (out.get(id) ?? 0) + (res.Values ?? []).reduce((s, v) => s + v, 0));
      }
      next = r.NextToken;
    } while (next);
  }
  return out;
}
