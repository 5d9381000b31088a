/*
 * Test-data generator, not part of keeplb: an LD_PRELOAD shim that stands in
 * for the kernel's IPVS generic-netlink family so the real ipvsadm 1.31 binary
 * can print its listings for a known table on a machine without IP_VS.
 * See capture.sh, which records ipvsadm's output into the golden files.
 *
 * The table comes from the file named by FAKE_IPVS_TABLE (format in
 * table.txt).  FAKE_IPVS_ERRNO=N makes every modifying command fail with
 * errno N, as the kernel would report it.  FAKE_IPVS_CONN names a file served
 * as /proc/net/ip_vs_conn, FAKE_IPVS_HOSTS a file of "address name" lines
 * that gethostbyaddr answers from (instead of the machine's resolver).
 *
 * Build: gcc -shared -fPIC -o fake_ipvs.so fake_ipvs.c -lnl-3
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <netdb.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <linux/netlink.h>

struct nl_msg;
struct nl_sock;
struct nlattr;
typedef int (*valid_cb_t)(struct nl_msg *, void *);
typedef int (*err_cb_t)(void *, struct nlmsgerr *, void *);

struct nl_msg *nlmsg_alloc(void);
void nlmsg_free(struct nl_msg *);
struct nlmsghdr *nlmsg_hdr(struct nl_msg *);
void *genlmsg_put(struct nl_msg *, uint32_t, uint32_t, int, int, int, uint8_t, uint8_t);
int nla_put(struct nl_msg *, int, int, const void *);
struct nlattr *nla_nest_start(struct nl_msg *, int);
int nla_nest_end(struct nl_msg *, struct nlattr *);

enum { CMD_NEW_SERVICE = 1, CMD_GET_SERVICE = 4, CMD_GET_DEST = 8,
       CMD_GET_DAEMON = 11, CMD_GET_TIMEOUT = 13, CMD_GET_INFO = 15 };

static valid_cb_t valid_cb;
static void *valid_arg;
static err_cb_t err_cb;
static void *err_arg;
static int last_cmd;
static unsigned char req_svc[512];
static int req_svc_len;

struct svc { int af, proto, port, fwmark; unsigned char addr[16]; char sched[16];
	     unsigned flags, timeout, netmask; char pe[16]; unsigned long long st[10]; };
struct dst { int svc, af, port, fwd; unsigned char addr[16]; unsigned weight, uthr, lthr,
	     act, inact, pers, tun_type, tun_port, tun_flags; unsigned long long st[10]; };
static struct svc svcs[32];
static struct dst dsts[128];
static int nsvc, ndst;
static unsigned tmo[3] = { 900, 120, 300 };

static void parse_addr(const char *s, int *af, unsigned char *out)
{
	memset(out, 0, 16);
	if (strchr(s, ':')) { *af = 10; inet_pton(10, s, out); }
	else { *af = 2; inet_pton(2, s, out); }
}

static void load_table(void)
{
	static int loaded;
	char line[512], a[64], b[64], c[64];
	FILE *f;

	if (loaded++)
		return;
	if (!getenv("FAKE_IPVS_TABLE") || !(f = fopen(getenv("FAKE_IPVS_TABLE"), "r")))
		return;
	while (fgets(line, sizeof(line), f)) {
		if (line[0] == 'S') {
			struct svc *s = &svcs[nsvc++];
			/* S proto addr port fwmark sched flags timeout netmask pe 10*stats */
			sscanf(line, "S %d %63s %d %d %15s %u %u %63s %15s %llu %llu %llu %llu %llu %llu %llu %llu %llu %llu",
			       &s->proto, a, &s->port, &s->fwmark, s->sched, &s->flags, &s->timeout,
			       b, s->pe, &s->st[0], &s->st[1], &s->st[2], &s->st[3], &s->st[4],
			       &s->st[5], &s->st[6], &s->st[7], &s->st[8], &s->st[9]);
			parse_addr(a, &s->af, s->addr);
			if (strchr(b, '.')) { struct in_addr m; inet_aton(b, &m); s->netmask = m.s_addr; }
			else s->netmask = atoi(b);
			if (!strcmp(s->pe, "-")) s->pe[0] = 0;
		} else if (line[0] == 'D') {
			struct dst *d = &dsts[ndst++];
			/* D addr port fwd weight uthr lthr act inact pers tun_type tun_port tun_flags 10*stats */
			sscanf(line, "D %63s %d %d %u %u %u %u %u %u %u %u %u %llu %llu %llu %llu %llu %llu %llu %llu %llu %llu",
			       a, &d->port, &d->fwd, &d->weight, &d->uthr, &d->lthr, &d->act, &d->inact,
			       &d->pers, &d->tun_type, &d->tun_port, &d->tun_flags, &d->st[0], &d->st[1],
			       &d->st[2], &d->st[3], &d->st[4], &d->st[5], &d->st[6], &d->st[7],
			       &d->st[8], &d->st[9]);
			parse_addr(a, &d->af, d->addr);
			d->svc = nsvc - 1;
		} else if (line[0] == 'T') {
			sscanf(line, "T %u %u %u", &tmo[0], &tmo[1], &tmo[2]);
		}
		(void)c;
	}
	fclose(f);
}

int genl_connect(struct nl_sock *s) { (void)s; return 0; }
int genl_ctrl_resolve(struct nl_sock *s, const char *n) { (void)s; (void)n; return 42; }
int nl_socket_modify_cb(struct nl_sock *s, int type, int kind, valid_cb_t f, void *arg)
{
	(void)s; (void)kind;
	if (type == 0) { valid_cb = f; valid_arg = arg; }
	return 0;
}
int nl_socket_modify_err_cb(struct nl_sock *s, int kind, err_cb_t f, void *arg)
{
	(void)s; (void)kind; err_cb = f; err_arg = arg; return 0;
}

int nl_send_auto_complete(struct nl_sock *s, struct nl_msg *msg)
{
	struct nlmsghdr *h = nlmsg_hdr(msg);
	unsigned char *p = (unsigned char *)h + NLMSG_HDRLEN;
	int len = h->nlmsg_len - NLMSG_HDRLEN - 4, off = 4;

	(void)s;
	last_cmd = p[0];
	req_svc_len = 0;
	while (off + 4 <= len + 4) {
		struct nlattr_hdr { uint16_t len, type; } *a = (void *)(p + off);
		if (a->len < 4) break;
		if ((a->type & 0x3fff) == 1 && a->len - 4 <= (int)sizeof(req_svc)) {
			req_svc_len = a->len - 4;
			memcpy(req_svc, p + off + 4, req_svc_len);
		}
		off += (a->len + 3) & ~3;
	}
	return 0;
}

/* does the service named in the request (nested IPVS_CMD_ATTR_SERVICE) match s? */
static int req_matches(struct svc *s)
{
	int off = 0, fwmark = 0, proto = 0, port = 0;
	unsigned char addr[16] = { 0 };

	while (off + 4 <= req_svc_len) {
		uint16_t alen, type;
		memcpy(&alen, req_svc + off, 2);
		memcpy(&type, req_svc + off + 2, 2);
		if (alen < 4) break;
		if (type == 5) memcpy(&fwmark, req_svc + off + 4, 4);
		if (type == 2) memcpy(&proto, req_svc + off + 4, 2);
		if (type == 4) memcpy(&port, req_svc + off + 4, 2);
		if (type == 3) memcpy(addr, req_svc + off + 4, 16);
		off += (alen + 3) & ~3;
	}
	if (fwmark || s->fwmark)
		return fwmark == s->fwmark;
	return proto == s->proto && ntohs(port) == s->port && !memcmp(addr, s->addr, 16);
}

static void put_u16(struct nl_msg *m, int t, uint16_t v) { nla_put(m, t, 2, &v); }
static void put_u32(struct nl_msg *m, int t, uint32_t v) { nla_put(m, t, 4, &v); }
static void put_u64(struct nl_msg *m, int t, uint64_t v) { nla_put(m, t, 8, &v); }

static void put_stats64(struct nl_msg *m, int t, unsigned long long *st)
{
	struct nlattr *n = nla_nest_start(m, t);
	for (int i = 0; i < 10; i++)
		put_u64(m, i + 1, st[i]);
	nla_nest_end(m, n);
}

static struct nl_msg *reply(int cmd)
{
	struct nl_msg *m = nlmsg_alloc();
	genlmsg_put(m, 0, 0, 42, 0, 0, cmd, 1);
	return m;
}

static void send_svc(struct svc *s)
{
	struct nl_msg *m = reply(CMD_NEW_SERVICE);
	struct nlattr *n = nla_nest_start(m, 1);
	uint32_t flags[2] = { s->flags, 0xffffffff };

	put_u16(m, 1, s->af);
	if (s->fwmark) {
		put_u32(m, 5, s->fwmark);
	} else {
		put_u16(m, 2, s->proto);
		nla_put(m, 3, 16, s->addr);
		put_u16(m, 4, htons(s->port));
	}
	nla_put(m, 6, strlen(s->sched) + 1, s->sched);
	if (s->pe[0])
		nla_put(m, 11, strlen(s->pe) + 1, s->pe);
	nla_put(m, 7, 8, flags);
	put_u32(m, 8, s->timeout);
	put_u32(m, 9, s->netmask);
	put_stats64(m, 12, s->st);
	nla_nest_end(m, n);
	valid_cb(m, valid_arg);
	nlmsg_free(m);
}

int nl_recvmsgs_default(struct nl_sock *sock)
{
	struct nl_msg *m;

	(void)sock;
	load_table();
	switch (last_cmd) {
	case CMD_GET_INFO:
		m = reply(CMD_GET_INFO);
		put_u32(m, 1, 0x010201);
		put_u32(m, 2, 4096);
		valid_cb(m, valid_arg);
		nlmsg_free(m);
		return 0;
	case CMD_GET_TIMEOUT:
		m = reply(CMD_GET_TIMEOUT);
		put_u32(m, 4, tmo[0]);
		put_u32(m, 5, tmo[1]);
		put_u32(m, 6, tmo[2]);
		valid_cb(m, valid_arg);
		nlmsg_free(m);
		return 0;
	case CMD_GET_DAEMON:
		return 0;
	case CMD_GET_SERVICE:
		for (int i = 0; i < nsvc; i++)
			if (req_svc_len == 0 || req_matches(&svcs[i]))
				send_svc(&svcs[i]);
		if (req_svc_len) {
			for (int i = 0; i < nsvc; i++)
				if (req_matches(&svcs[i]))
					return 0;
			goto fail_esrch;
		}
		return 0;
	case CMD_GET_DEST:
		for (int i = 0; i < ndst; i++) {
			struct dst *d = &dsts[i];
			struct nlattr *n;
			if (!req_matches(&svcs[d->svc]))
				continue;
			m = reply(CMD_GET_DEST);
			n = nla_nest_start(m, 2);
			nla_put(m, 1, 16, d->addr);
			put_u16(m, 2, htons(d->port));
			put_u32(m, 3, d->fwd);
			put_u32(m, 4, d->weight);
			put_u32(m, 5, d->uthr);
			put_u32(m, 6, d->lthr);
			put_u32(m, 7, d->act);
			put_u32(m, 8, d->inact);
			put_u32(m, 9, d->pers);
			put_u16(m, 11, d->af);
			put_stats64(m, 12, d->st);
			{ uint8_t tt = d->tun_type; nla_put(m, 13, 1, &tt); }
			put_u16(m, 14, htons(d->tun_port));
			put_u16(m, 15, d->tun_flags);
			nla_nest_end(m, n);
			valid_cb(m, valid_arg);
			nlmsg_free(m);
		}
		return 0;
	default:
		if (getenv("FAKE_IPVS_ERRNO") && *getenv("FAKE_IPVS_ERRNO")) {
			struct nlmsgerr e;
			memset(&e, 0, sizeof(e));
			e.error = -atoi(getenv("FAKE_IPVS_ERRNO"));
			err_cb(NULL, &e, err_arg);
			return -1;
		}
		return 0;
	}
fail_esrch:
	{
		struct nlmsgerr e;
		memset(&e, 0, sizeof(e));
		e.error = -3;
		err_cb(NULL, &e, err_arg);
		return -1;
	}
}

/* /proc/net/ip_vs_conn, which exists only with the kernel module */
FILE *fopen(const char *path, const char *mode)
{
	static FILE *(*real_fopen)(const char *, const char *);

	if (!real_fopen)
		real_fopen = (FILE *(*)(const char *, const char *))dlsym(RTLD_NEXT, "fopen");
	if (!strcmp(path, "/proc/net/ip_vs_conn") && getenv("FAKE_IPVS_CONN"))
		path = getenv("FAKE_IPVS_CONN");
	return real_fopen(path, mode);
}

/* reverse lookups from FAKE_IPVS_HOSTS only, so that listings do not depend on DNS */
struct hostent *gethostbyaddr(const void *addr, socklen_t len, int type)
{
	static struct hostent h;
	static char name[256];
	static char *aliases[1];
	static char *addrs[2];
	static unsigned char found[16];
	char line[512], text[64];
	unsigned char parsed[16];
	FILE *f;

	if (!getenv("FAKE_IPVS_HOSTS") || !(f = fopen(getenv("FAKE_IPVS_HOSTS"), "r")))
		return NULL;
	while (fgets(line, sizeof(line), f)) {
		if (sscanf(line, "%63s %255s", text, name) != 2)
			continue;
		if (inet_pton(type, text, parsed) == 1 && !memcmp(parsed, addr, len)) {
			fclose(f);
			memcpy(found, addr, len);
			addrs[0] = (char *)found;
			h.h_name = name;
			h.h_aliases = aliases;
			h.h_addrtype = type;
			h.h_length = len;
			h.h_addr_list = addrs;
			return &h;
		}
	}
	fclose(f);
	return NULL;
}
