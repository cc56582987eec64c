// SPDX-License-Identifier: Apache-2.0
/*
 * Linked before a static libpcap.a (release builds): libpcap's D-Bus capture module (pcap-dbus.o,
 * capture of D-Bus message buses, which this helper never opens) is replaced by these two entry
 * points, so the module and libdbus-1 and libsystemd behind it are not linked in. Same signatures
 * as libpcap 1.10's pcap-dbus.h: no D-Bus devices listed, no device claimed.
 */
#include <stddef.h>

struct pcap_if_list;
struct pcap;

int dbus_findalldevs(struct pcap_if_list *devlistp, char *err_str);
struct pcap *dbus_create(const char *device, char *ebuf, int *is_ours);

int dbus_findalldevs(struct pcap_if_list *devlistp, char *err_str)
{
	(void)devlistp;
	(void)err_str;
	return 0;
}

struct pcap *dbus_create(const char *device, char *ebuf, int *is_ours)
{
	(void)device;
	(void)ebuf;
	*is_ours = 0;
	return NULL;
}
