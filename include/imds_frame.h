/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * The framing both helper processes write on their stdout, native/imds_capture (libpcap) and
 * bpf/.output/imds_connect (the eBPF loader): every record starts with this header, in host byte
 * order (little endian on the x86_64 and arm64 hosts the agent runs on); size counts the whole
 * record, header included. The loader's records begin with these two fields (asserted in
 * imds_connect.h). Decoded by agent/src/capture/framing.ts and agent/src/attribution/ebpf/events.ts;
 * pinned by test/ebpf/events.test.ts through bpf/layout_dump.c.
 */
#ifndef __IMDS_FRAME_H
#define __IMDS_FRAME_H

struct imds_frame_hdr {
	__u32 type;	/* 0: record type, numbered per helper */
	__u32 size;	/* 4: the whole record, this header included */
};

#endif /* __IMDS_FRAME_H */
