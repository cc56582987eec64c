// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * layout_dump - print the layout of the records in imds_connect.h as JSON:
 * {"constants":{...},"connect":{"size":N,"fields":{"name":[offset,size],...}},...}
 * Used by test/ebpf/events.test.ts to pin the TypeScript decoder to the C ABI.
 */
#include <stddef.h>
#include <stdio.h>
#include <linux/types.h>
#include "imds_connect.h"

#define F(type, field) \
	printf("%s\"%s\":[%zu,%zu]", first ? "" : ",", #field, \
	       offsetof(struct type, field), sizeof(((struct type *)0)->field)); \
	first = 0;
#define C(name) printf("%s\"%s\":%ld", first ? "" : ",", #name, (long)(name)); first = 0;

int main(void)
{
	int first = 1;

	printf("{\"constants\":{");
	C(IMDS_LAYOUT_VERSION) C(IMDS_COMM_LEN) C(IMDS_ARGV_MAX) C(IMDS_MAX_ANCESTORS)
	C(IMDS_MAX_TARGETS) C(IMDS_REC_CONNECT) C(IMDS_REC_READY) C(IMDS_REC_STATS)
	C(IMDS_AF_INET) C(IMDS_AF_INET6) C(IMDS_EXE_MAX) C(IMDS_EXE_NAME_MAX) C(IMDS_EXE_DEPTH)
	C(IMDS_TOP_SOURCES) C(IMDS_MAX_NETNS) C(IMDS_MAX_SOURCES) C(IMDS_NETNS_KEEP) C(IMDS_NETNS_DROP)

	printf("},\"frame\":{\"size\":%zu,\"fields\":{", sizeof(struct imds_frame_hdr));
	first = 1;
	F(imds_frame_hdr, type) F(imds_frame_hdr, size)

	printf("}},\"ancestor\":{\"size\":%zu,\"fields\":{", sizeof(struct imds_ancestor));
	first = 1;
	F(imds_ancestor, pid) F(imds_ancestor, _pad) F(imds_ancestor, comm)

	printf("}},\"connect\":{\"size\":%zu,\"fields\":{", sizeof(struct imds_connect_event));
	first = 1;
	F(imds_connect_event, type) F(imds_connect_event, size)
	F(imds_connect_event, ts_syn_ns) F(imds_connect_event, ts_emit_ns)
	F(imds_connect_event, cgroup_id) F(imds_connect_event, pid)
	F(imds_connect_event, tgid) F(imds_connect_event, ppid)
	F(imds_connect_event, uid) F(imds_connect_event, gid)
	F(imds_connect_event, netns_ino) F(imds_connect_event, new_state)
	F(imds_connect_event, family) F(imds_connect_event, sport)
	F(imds_connect_event, dport) F(imds_connect_event, argv_len)
	F(imds_connect_event, argv_truncated) F(imds_connect_event, argv_error)
	F(imds_connect_event, v4_mapped) F(imds_connect_event, n_ancestors)
	F(imds_connect_event, saddr) F(imds_connect_event, daddr)
	F(imds_connect_event, comm) F(imds_connect_event, parent_comm)
	F(imds_connect_event, ancestors) F(imds_connect_event, isn)
	F(imds_connect_event, exe_len) F(imds_connect_event, exe_truncated)
	F(imds_connect_event, exe_error) F(imds_connect_event, exe)
	F(imds_connect_event, argv)

	printf("}},\"ready\":{\"size\":%zu,\"fields\":{", sizeof(struct imds_ready_record));
	first = 1;
	F(imds_ready_record, type) F(imds_ready_record, size)
	F(imds_ready_record, layout_version) F(imds_ready_record, loader_pid)
	F(imds_ready_record, open_us) F(imds_ready_record, load_us)
	F(imds_ready_record, attach_us) F(imds_ready_record, mono_ns)
	F(imds_ready_record, realtime_ns) F(imds_ready_record, argv_max)
	F(imds_ready_record, ringbuf_bytes) F(imds_ready_record, budget_rate)
	F(imds_ready_record, budget_burst) F(imds_ready_record, netns_filter)
	F(imds_ready_record, exe_max)

	printf("}},\"source\":{\"size\":%zu,\"fields\":{", sizeof(struct imds_source_drops));
	first = 1;
	F(imds_source_drops, cgroup_id) F(imds_source_drops, netns_ino)
	F(imds_source_drops, _pad) F(imds_source_drops, dropped)
	F(imds_source_drops, lost)

	printf("}},\"stats\":{\"size\":%zu,\"fields\":{", sizeof(struct imds_stats_record));
	first = 1;
	F(imds_stats_record, type) F(imds_stats_record, size)
	F(imds_stats_record, lost) F(imds_stats_record, emitted)
	F(imds_stats_record, untracked) F(imds_stats_record, track_failed)
	F(imds_stats_record, mono_ns) F(imds_stats_record, final)
	F(imds_stats_record, n_top) F(imds_stats_record, filtered)
	F(imds_stats_record, over_budget) F(imds_stats_record, top)
	printf("}}}\n");
	return 0;
}
