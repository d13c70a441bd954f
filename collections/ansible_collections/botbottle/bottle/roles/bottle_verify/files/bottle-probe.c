/*
 * bottle-probe: the in-bottle half of `bottle verify`.
 *
 * A small program, compiled statically on the bottle's host (so it runs in any
 * bottle image, with no shell, libc or DNS tools there), that performs network
 * probes from inside a bottle and prints one JSON object per probe on stdout.
 * It uses numeric addresses only (no name service), builds DNS queries itself
 * and never retries, so every packet it sends is the one the caller asked for.
 *
 *   bottle-probe [-t TIMEOUT_MS] SPEC...
 *
 * SPEC is one argument, words separated by spaces:
 *   resolv                               nameservers listed in /etc/resolv.conf
 *   dns SERVER PORT udp|tcp QTYPE NAME   one DNS query; SERVER may be "system"
 *                                        (the first nameserver of /etc/resolv.conf)
 *   tcp ADDRESS PORT                     one TCP connection attempt
 *   caps                                 the capability sets (CapEff, CapPrm, CapBnd of
 *                                        /proc/PID/status) of this process ("self")
 *                                        and of the bottle's PID 1 ("init": the agent's
 *                                        init or command), as the hex masks /proc shows
 *   unlink                               delete this program's own file (clean-up
 *                                        after copying it into a bottle)
 *
 * All SPECs run at the same time (one process each); the results come in SPEC
 * order.
 *
 * Outcomes: "answer" (a DNS reply with the query's id came back; rcode and
 * ancount are reported), "connected", "timeout", "refused", "unreachable",
 * "filtered" (the kernel would not send it: EPERM), "error" (with "errno"); for caps,
 * "read" (both processes' masks: {"eff","prm","bnd"}) or "error" (with "errno"; a process
 * whose masks could not be read has {"errno"} in place of its masks).
 * Exit status: 0 when every SPEC was understood, 2 otherwise.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static int timeout_ms = 2000;
static int last_errno; /* errno behind the last "error"/"filtered" outcome */

struct addr {
	struct sockaddr_storage ss;
	socklen_t len;
};

static const char *rcode_name(int rcode)
{
	static const char *names[] = {"NOERROR", "FORMERR", "SERVFAIL", "NXDOMAIN",
				      "NOTIMP",  "REFUSED", "YXDOMAIN", "YXRRSET",
				      "NXRRSET", "NOTAUTH", "NOTZONE"};
	return rcode >= 0 && rcode <= 10 ? names[rcode] : "OTHER";
}

static int qtype_number(const char *name)
{
	static const struct { const char *name; int number; } types[] = {
		{"A", 1}, {"NS", 2}, {"CNAME", 5}, {"NULL", 10}, {"MX", 15},
		{"TXT", 16}, {"AAAA", 28}, {"ANY", 255},
	};
	for (size_t i = 0; i < sizeof types / sizeof types[0]; i++)
		if (strcmp(types[i].name, name) == 0)
			return types[i].number;
	return -1;
}

/* JSON string: the probe only prints names and addresses it was given. */
static void json_str(const char *s)
{
	putchar('"');
	for (; *s; s++) {
		unsigned char c = (unsigned char)*s;
		if (c == '"' || c == '\\')
			printf("\\%c", c);
		else if (c < 0x20 || c > 0x7e)
			printf("\\u%04x", c);
		else
			putchar(c);
	}
	putchar('"');
}

static const char *errno_outcome(int err)
{
	last_errno = err;
	switch (err) {
	case ECONNREFUSED:
		return "refused";
	case ENETUNREACH:
	case EHOSTUNREACH:
	case EADDRNOTAVAIL:
	case EAFNOSUPPORT:
		return "unreachable";
	case ETIMEDOUT:
		return "timeout";
	case EPERM:
	case EACCES:
		return "filtered"; /* a local packet filter refused to send it */
	default:
		return "error";
	}
}

static int parse_addr(const char *host, const char *port, struct addr *out)
{
	char *end;
	long p = strtol(port, &end, 10);
	if (*end != '\0' || p < 1 || p > 65535)
		return -1;
	memset(out, 0, sizeof *out);
	struct sockaddr_in *v4 = (struct sockaddr_in *)&out->ss;
	struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)&out->ss;
	if (inet_pton(AF_INET, host, &v4->sin_addr) == 1) {
		v4->sin_family = AF_INET;
		v4->sin_port = htons((unsigned short)p);
		out->len = sizeof *v4;
		return 0;
	}
	if (inet_pton(AF_INET6, host, &v6->sin6_addr) == 1) {
		v6->sin6_family = AF_INET6;
		v6->sin6_port = htons((unsigned short)p);
		out->len = sizeof *v6;
		return 0;
	}
	return -1;
}

/* Fills names with up to max nameserver addresses from /etc/resolv.conf. */
static int system_nameservers(char names[][64], int max)
{
	FILE *f = fopen("/etc/resolv.conf", "r");
	char line[512];
	int n = 0;
	if (f == NULL)
		return 0;
	while (n < max && fgets(line, sizeof line, f) != NULL) {
		char word[32], value[64];
		if (sscanf(line, "%31s %63s", word, value) == 2 && strcmp(word, "nameserver") == 0)
			snprintf(names[n++], 64, "%s", value);
	}
	fclose(f);
	return n;
}

static int build_query(const char *name, int qtype, unsigned short id, unsigned char *buf)
{
	int len = 12;
	memset(buf, 0, 12);
	buf[0] = (unsigned char)(id >> 8);
	buf[1] = (unsigned char)id;
	buf[2] = 0x01; /* RD */
	buf[5] = 1;    /* QDCOUNT */
	const char *label = name;
	while (*label) {
		const char *dot = strchr(label, '.');
		size_t n = dot ? (size_t)(dot - label) : strlen(label);
		if (n == 0 || n > 63 || len + (int)n + 6 > 300)
			return -1;
		buf[len++] = (unsigned char)n;
		memcpy(buf + len, label, n);
		len += (int)n;
		label += n + (dot ? 1 : 0);
	}
	buf[len++] = 0;
	buf[len++] = (unsigned char)(qtype >> 8);
	buf[len++] = (unsigned char)qtype;
	buf[len++] = 0;
	buf[len++] = 1; /* IN */
	return len;
}

/* Waits for fd to become ready; 1 ready, 0 timed out, -1 error. */
static int wait_for(int fd, short events, long deadline_ms)
{
	struct timespec now;
	clock_gettime(CLOCK_MONOTONIC, &now);
	long left = deadline_ms - (now.tv_sec * 1000 + now.tv_nsec / 1000000);
	if (left <= 0)
		return 0;
	struct pollfd p = {.fd = fd, .events = events};
	int r = poll(&p, 1, (int)left);
	return r;
}

static long deadline(void)
{
	struct timespec now;
	clock_gettime(CLOCK_MONOTONIC, &now);
	return now.tv_sec * 1000 + now.tv_nsec / 1000000 + timeout_ms;
}

/* Nonblocking connect; returns the socket or -1 with *outcome set. */
static int open_connected(const struct addr *a, int type, long until, const char **outcome)
{
	int fd = socket(a->ss.ss_family, type | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		*outcome = errno_outcome(errno);
		return -1;
	}
	fcntl(fd, F_SETFL, O_NONBLOCK);
	if (connect(fd, (const struct sockaddr *)&a->ss, a->len) == 0)
		return fd;
	if (errno != EINPROGRESS) {
		*outcome = errno_outcome(errno);
		close(fd);
		return -1;
	}
	int r = wait_for(fd, POLLOUT, until);
	int err = 0;
	socklen_t len = sizeof err;
	if (r <= 0) {
		*outcome = r == 0 ? "timeout" : "error";
		close(fd);
		return -1;
	}
	getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len);
	if (err != 0) {
		*outcome = errno_outcome(err);
		close(fd);
		return -1;
	}
	return fd;
}

/* Reads exactly n bytes before the deadline; 0 on success or the outcome. */
static const char *read_full(int fd, unsigned char *buf, size_t n, long until)
{
	size_t got = 0;
	while (got < n) {
		int r = wait_for(fd, POLLIN, until);
		if (r <= 0)
			return r == 0 ? "timeout" : "error";
		ssize_t k = recv(fd, buf + got, n - got, 0);
		if (k == 0)
			return "refused"; /* closed without a reply */
		if (k < 0) {
			if (errno == EAGAIN || errno == EINTR)
				continue;
			return errno_outcome(errno);
		}
		got += (size_t)k;
	}
	return NULL;
}

static const char *dns_exchange(const struct addr *a, int tcp, const unsigned char *q, int qlen,
				unsigned char *reply, int *rlen)
{
	long until = deadline();
	const char *outcome = "error";
	int fd = open_connected(a, tcp ? SOCK_STREAM : SOCK_DGRAM, until, &outcome);
	if (fd < 0)
		return outcome;
	outcome = NULL;
	if (tcp) {
		unsigned char framed[2 + 512];
		framed[0] = (unsigned char)(qlen >> 8);
		framed[1] = (unsigned char)qlen;
		memcpy(framed + 2, q, (size_t)qlen);
		if (send(fd, framed, (size_t)qlen + 2, MSG_NOSIGNAL) != qlen + 2)
			outcome = errno_outcome(errno);
		unsigned char hdr[2];
		if (outcome == NULL)
			outcome = read_full(fd, hdr, 2, until);
		if (outcome == NULL) {
			int n = hdr[0] << 8 | hdr[1];
			if (n < 12 || n > 4096)
				outcome = "error";
			else if ((outcome = read_full(fd, reply, (size_t)n, until)) == NULL)
				*rlen = n;
		}
	} else {
		if (send(fd, q, (size_t)qlen, 0) != qlen)
			outcome = errno_outcome(errno);
		while (outcome == NULL) {
			int r = wait_for(fd, POLLIN, until);
			if (r <= 0) {
				outcome = r == 0 ? "timeout" : "error";
				break;
			}
			ssize_t k = recv(fd, reply, 4096, 0);
			if (k < 0) {
				if (errno != EAGAIN && errno != EINTR)
					outcome = errno_outcome(errno);
				continue;
			}
			if (k >= 12 && reply[0] == q[0] && reply[1] == q[1]) {
				*rlen = (int)k;
				break;
			}
		}
	}
	close(fd);
	return outcome;
}

static void print_head(const char *op, const char *server, const char *port, const char *proto)
{
	printf("{\"op\":");
	json_str(op);
	printf(",\"server\":");
	json_str(server);
	printf(",\"port\":%s,\"proto\":", port);
	json_str(proto);
}

static void print_outcome(const char *outcome)
{
	printf(",\"outcome\":\"%s\"", outcome);
	if (strcmp(outcome, "error") == 0 || strcmp(outcome, "filtered") == 0) {
		printf(",\"errno\":");
		json_str(strerror(last_errno));
	}
	printf("}\n");
}

static int probe_dns(char **w, int n)
{
	if (n != 6)
		return -1;
	char system_ns[1][64];
	const char *server = w[1];
	if (strcmp(server, "system") == 0) {
		if (system_nameservers(system_ns, 1) < 1) {
			print_head("dns", server, w[2], w[3]);
			printf(",\"outcome\":\"error\",\"detail\":\"no nameserver in /etc/resolv.conf\"}\n");
			return 0;
		}
		server = system_ns[0];
	}
	int tcp = strcmp(w[3], "tcp") == 0;
	int qtype = qtype_number(w[4]);
	struct addr a;
	unsigned char q[320], reply[4096];
	if ((!tcp && strcmp(w[3], "udp") != 0) || qtype < 0 || parse_addr(server, w[2], &a) != 0)
		return -1;
	struct timeval tv;
	gettimeofday(&tv, NULL);
	unsigned short id = (unsigned short)(tv.tv_usec ^ getpid() ^ (tv.tv_sec << 4));
	int qlen = build_query(w[5], qtype, id, q);
	if (qlen < 0)
		return -1;
	int rlen = 0;
	const char *outcome = dns_exchange(&a, tcp, q, qlen, reply, &rlen);
	print_head("dns", server, w[2], w[3]);
	printf(",\"qtype\":");
	json_str(w[4]);
	printf(",\"name\":");
	json_str(w[5]);
	if (outcome == NULL)
		printf(",\"outcome\":\"answer\",\"rcode\":\"%s\",\"ancount\":%d}\n",
		       rcode_name(reply[3] & 0x0f), reply[6] << 8 | reply[7]);
	else
		print_outcome(outcome);
	return 0;
}

static int probe_tcp(char **w, int n)
{
	struct addr a;
	if (n != 3 || parse_addr(w[1], w[2], &a) != 0)
		return -1;
	const char *outcome = "connected";
	int fd = open_connected(&a, SOCK_STREAM, deadline(), &outcome);
	if (fd >= 0)
		close(fd);
	print_head("tcp", w[1], w[2], "tcp");
	print_outcome(outcome);
	return 0;
}

static int probe_resolv(void)
{
	char names[8][64];
	int n = system_nameservers(names, 8);
	printf("{\"op\":\"resolv\",\"nameservers\":[");
	for (int i = 0; i < n; i++) {
		if (i)
			putchar(',');
		json_str(names[i]);
	}
	printf("]}\n");
	return 0;
}

struct caps {
	char eff[32], prm[32], bnd[32];
};

/* Reads CapEff, CapPrm and CapBnd from a /proc/PID/status file; 0, or an errno value
 * (ENODATA when the file lacks one of them). */
static int read_caps(const char *path, struct caps *c)
{
	static const char *const keys[] = {"CapEff:", "CapPrm:", "CapBnd:"};
	char *const masks[] = {c->eff, c->prm, c->bnd};
	char line[256];
	int found = 0;
	memset(c, 0, sizeof *c);
	FILE *f = fopen(path, "r");
	if (f == NULL)
		return errno;
	while (fgets(line, sizeof line, f) != NULL)
		for (int i = 0; i < 3; i++) {
			size_t n = strlen(keys[i]);
			if (strncmp(line, keys[i], n) == 0 && sscanf(line + n, "%31s", masks[i]) == 1)
				found |= 1 << i;
		}
	int err = ferror(f) ? EIO : 0;
	fclose(f);
	return err != 0 ? err : found == 7 ? 0 : ENODATA;
}

static void print_caps(const char *key, const struct caps *c, int err)
{
	printf(",\"%s\":{", key);
	if (err != 0) {
		printf("\"errno\":");
		json_str(strerror(err));
	} else {
		printf("\"eff\":");
		json_str(c->eff);
		printf(",\"prm\":");
		json_str(c->prm);
		printf(",\"bnd\":");
		json_str(c->bnd);
	}
	putchar('}');
}

/* This process's capability sets and those of PID 1 (the bottle's agent). */
static int probe_caps(void)
{
	struct caps self, init;
	int self_err = read_caps("/proc/self/status", &self);
	int init_err = read_caps("/proc/1/status", &init);
	printf("{\"op\":\"caps\",\"outcome\":");
	if (self_err == 0 && init_err == 0) {
		printf("\"read\"");
	} else {
		printf("\"error\",\"errno\":");
		json_str(strerror(self_err != 0 ? self_err : init_err));
	}
	print_caps("self", &self, self_err);
	print_caps("init", &init, init_err);
	printf("}\n");
	return 0;
}

static int remove_self(void)
{
	char path[4096];
	ssize_t n = readlink("/proc/self/exe", path, sizeof path - 1);
	int removed = 0;
	if (n > 0) {
		path[n] = '\0';
		removed = unlink(path) == 0;
	}
	printf("{\"op\":\"unlink\",\"removed\":%s}\n", removed ? "true" : "false");
	return 0;
}

static int run_spec(char *spec)
{
	char *w[8];
	int n = 0;
	for (char *tok = strtok(spec, " "); tok != NULL && n < 8; tok = strtok(NULL, " "))
		w[n++] = tok;
	if (n == 0)
		return -1;
	if (strcmp(w[0], "resolv") == 0 && n == 1)
		return probe_resolv();
	if (strcmp(w[0], "unlink") == 0 && n == 1)
		return remove_self();
	if (strcmp(w[0], "caps") == 0 && n == 1)
		return probe_caps();
	if (strcmp(w[0], "dns") == 0)
		return probe_dns(w, n);
	if (strcmp(w[0], "tcp") == 0)
		return probe_tcp(w, n);
	return -1;
}

static int run_one(const char *spec)
{
	char copy[512];
	snprintf(copy, sizeof copy, "%s", spec);
	if (run_spec(copy) != 0) {
		printf("{\"op\":\"invalid\",\"spec\":");
		json_str(spec);
		printf("}\n");
		return 2;
	}
	return 0;
}

/* Forks a child that runs spec with its stdout on a pipe; *pid is -1 when that failed. */
static void start_spec(const char *spec, pid_t *pid, int *fd)
{
	int p[2];
	*pid = -1;
	*fd = -1;
	if (pipe(p) != 0)
		return;
	fflush(stdout);
	pid_t child = fork();
	if (child == 0) {
		close(p[0]);
		dup2(p[1], STDOUT_FILENO);
		close(p[1]);
		int status = run_one(spec);
		fflush(stdout);
		_exit(status);
	}
	close(p[1]);
	if (child < 0) {
		close(p[0]);
		return;
	}
	*pid = child;
	*fd = p[0];
}

/* Copies a child's output to stdout (or runs the spec here if it could not fork). */
static int finish_spec(const char *spec, pid_t pid, int fd)
{
	if (pid < 0) {
		int status = run_one(spec);
		fflush(stdout);
		return status;
	}
	char buf[4096];
	ssize_t n;
	while ((n = read(fd, buf, sizeof buf)) > 0)
		fwrite(buf, 1, (size_t)n, stdout);
	fflush(stdout);
	close(fd);
	int status = 0;
	if (waitpid(pid, &status, 0) < 0 || !WIFEXITED(status))
		return 2;
	return WEXITSTATUS(status);
}

int main(int argc, char **argv)
{
	int status = 0, i = 1;
	if (argc > 2 && strcmp(argv[1], "-t") == 0) {
		timeout_ms = atoi(argv[2]);
		if (timeout_ms < 1 || timeout_ms > 60000) {
			fprintf(stderr, "bottle-probe: -t takes 1..60000 milliseconds\n");
			return 2;
		}
		i = 3;
	}
	if (i >= argc) {
		fprintf(stderr, "usage: bottle-probe [-t TIMEOUT_MS] SPEC...\n");
		return 2;
	}
	/* Every spec runs at once, in its own process (a blocked probe waits out its
	 * timeout; run one after another, a bottle's suite would take the sum). The
	 * results are printed in the order of the specs. */
	int count = argc - i;
	pid_t *pids = calloc((size_t)count, sizeof *pids);
	int *fds = calloc((size_t)count, sizeof *fds);
	if (pids == NULL || fds == NULL)
		return 2;
	for (int k = 0; k < count; k++)
		start_spec(argv[i + k], &pids[k], &fds[k]);
	for (int k = 0; k < count; k++)
		if (finish_spec(argv[i + k], pids[k], fds[k]) != 0)
			status = 2;
	return status;
}
