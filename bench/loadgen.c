/*
 * OCM relay load generator: the hot loop of bench/run.py, in C so that the generator
 * is not the bottleneck on a 2-core machine (Linux only: epoll, recvmmsg, sendmmsg).
 *
 * bench/run.py does the TCRP part (create/join rooms, with ocm.protocol) and writes a
 * members file; this program owns the UDP part:
 *
 *   loadgen run   --server PORT --members FILE [options]   drive a relay, print JSON
 *   loadgen relay --port PORT --lifetime S                 a bare relay in C (the
 *                                                          generator's ceiling)
 *
 * Members file, one member per line: "ROOM_INDEX IS_SENDER IPV4 ROOM_HEX TOKEN [BOOT]".
 * Every member gets its own UDP socket on that (loopback) address, connected to the
 * relay on 127.0.0.1; OCM binds each token to the address that obtained it. BOOT (16 hex
 * digits, the COMPLETE's "boot") makes the member a delivery member (docs/protocol.md,
 * section 3): it sends DATA with its own increasing MsgNo instead of a version 1 chat
 * datagram, PING instead of a heartbeat, and receives CHAT instead of MESSAGE; "-" or
 * no sixth field is a version 1 member. It never resends: the server relays each
 * member's DATA in MsgNo order, so a DATA lost on loopback (a full socket buffer) holds
 * up that member's later ones, and the run shows it as loss and stalls. The closed
 * loop keeps the relay's buffer from filling, so a run without loss has none.
 *
 * A chat text is ASCII: 'M', the send time (16 hex digits, CLOCK_MONOTONIC ns), the
 * sender index (8 hex), the sender's message number (8 hex), then 'x' up to
 * --text-size. A message counts when its send time is inside the measured window;
 * its latency is receive time minus send time (same clock, same machine). In a CHAT the
 * text starts 4 bytes later than in a MESSAGE, after the MsgNo.
 *
 * Modes:
 *   window  saturation: at most --window messages in flight (sent, sender's own copy
 *           not back yet), so the relay always has work queued but its receive buffer
 *           never overflows; what it delivers per second is its capacity.
 *   rate    a fixed offered rate (--rate msgs/s over all senders), paced in ns.
 *   idle    no chat, heartbeats only (memory scenario).
 *
 * --spin 1 busy-polls the sockets while measuring instead of sleeping in epoll: a
 * datagram delivered to a sleeping socket costs its sender (the relay) a wake-up of
 * this process, a loopback artefact (a real client sleeps on another host), so with a
 * core of its own the generator stays awake. bench/run.py turns it on when pinned.
 *
 * Every phase is bounded in time; the program always exits by itself.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_DGRAM 4096
#define TEXT_HEAD 33 /* 'M' + 16 + 8 + 8 hex digits */
#define BATCH 64
#define EVENTS 512
#define HIST_US 10000   /* 1 us buckets up to 10 ms */
#define HIST_MS 60000   /* then 1 ms buckets up to 60 s */
#define SOCK_BUF (4 << 20)
/* No echo for this long with a full window: its datagrams were lost. Long enough
 * that a relay descheduled by other load is not mistaken for loss (which would
 * overfill its receive buffer). */
#define STALL_NS (500 * 1000000u)
#define BOOT_SIZE 8
#define CHAT_KIND 5 /* the delivery extension's Kinds, 5 to 10 */
#define STATUS_KIND 6
#define ACCEPTED_KIND 7
#define LAST_KIND 10

enum { FMT_OCM, FMT_BARE };
enum { MODE_WINDOW, MODE_RATE, MODE_IDLE };

typedef struct {
    int fd;
    int room;
    int sender; /* index into senders, or -1 */
    int registered;
    int prefix_len;
    unsigned char *prefix; /* RoomNameSize, TokenSize, room, token: a heartbeat */
    /* a delivery member: 0, Type, TokenSize, token (the Type byte is set per datagram) */
    int delivery;
    int ext_len;
    unsigned char *ext;
    unsigned char boot[BOOT_SIZE];
    uint32_t msg_no; /* the MsgNo of its last DATA (chat lines and probes alike) */
    uint32_t nonce;
    char ip[48];
} member_t;

typedef struct {
    int size;
    int first; /* a member that sends the room's registration probe */
    int registered;
} room_t;

typedef struct {
    int member;
    uint32_t sent;   /* number of the last message sent */
    uint32_t echoed; /* highest number whose own copy came back */
} sender_t;

static member_t *members;
static room_t *rooms;
static sender_t *senders;
static int n_members, n_rooms, n_senders;
static int fmt = FMT_OCM;
static int ep;

static uint64_t hist_us[HIST_US];
static uint64_t hist_ms[HIST_MS];
static uint64_t lat_max_ns;

/* counters */
static uint64_t sent_total, sent_window, expected, delivered, other_msgs;
static uint64_t notices, closed, errors, malformed, heartbeats, stalls, send_fail;
static uint64_t statuses, accepted;
static int n_delivery;
static int64_t inflight;
static uint64_t win_start, win_end;
static int n_registered;

static unsigned char rbuf[BATCH][MAX_DGRAM + 1];
static unsigned char sbuf[BATCH][MAX_DGRAM];

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void die(const char *what) {
    fprintf(stderr, "loadgen: %s: %s\n", what, strerror(errno));
    exit(2);
}

static void fail(const char *what) {
    fprintf(stderr, "loadgen: %s\n", what);
    exit(2);
}

static const char HEX[] = "0123456789abcdef";

static void put_hex(unsigned char *out, uint64_t value, int digits) {
    for (int i = digits - 1; i >= 0; i--) {
        out[i] = (unsigned char)HEX[value & 15];
        value >>= 4;
    }
}

static void put_u32(unsigned char *out, uint32_t value) {
    out[0] = (unsigned char)(value >> 24);
    out[1] = (unsigned char)(value >> 16);
    out[2] = (unsigned char)(value >> 8);
    out[3] = (unsigned char)value;
}

static int get_hex(const unsigned char *in, int digits, uint64_t *value) {
    uint64_t v = 0;
    for (int i = 0; i < digits; i++) {
        unsigned c = in[i];
        if (c >= '0' && c <= '9') v = (v << 4) | (c - '0');
        else if (c >= 'a' && c <= 'f') v = (v << 4) | (c - 'a' + 10);
        else return 0;
    }
    *value = v;
    return 1;
}

static int unhex(const char *text, unsigned char *out, int max) {
    int n = (int)strlen(text);
    if (n % 2 || n / 2 > max) return -1;
    for (int i = 0; i < n / 2; i++) {
        uint64_t v;
        if (!get_hex((const unsigned char *)text + 2 * i, 2, &v)) return -1;
        out[i] = (unsigned char)v;
    }
    return n / 2;
}

/* ---- process accounting (for the server: /proc/PID/stat; for us: getrusage) ---- */

static double proc_cpu_seconds(int pid) {
    if (pid <= 0) return -1;
    char path[64], buf[4096];
    snprintf(path, sizeof path, "/proc/%d/stat", pid);
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    char *p = strrchr(buf, ')'); /* the command name may hold spaces */
    if (!p) return -1;
    unsigned long utime = 0, stime = 0;
    /* after ")": state is field 3; utime and stime are fields 14 and 15 */
    if (sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &utime, &stime) != 2)
        return -1;
    return (double)(utime + stime) / (double)sysconf(_SC_CLK_TCK);
}

static double self_cpu_seconds(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + (double)ru.ru_stime.tv_sec +
           ru.ru_stime.tv_usec / 1e6;
}

/* ---- latency histogram ---- */

static void hist_add(uint64_t ns) {
    uint64_t us = ns / 1000;
    if (ns > lat_max_ns) lat_max_ns = ns;
    if (us < HIST_US) hist_us[us]++;
    else {
        uint64_t ms = us / 1000;
        hist_ms[ms < HIST_MS ? ms : HIST_MS - 1]++;
    }
}

static double hist_quantile(double q) {
    uint64_t total = 0;
    for (int i = 0; i < HIST_US; i++) total += hist_us[i];
    for (int i = 0; i < HIST_MS; i++) total += hist_ms[i];
    if (!total) return -1;
    uint64_t rank = (uint64_t)(q * (double)(total - 1)) + 1, seen = 0;
    for (int i = 0; i < HIST_US; i++) {
        seen += hist_us[i];
        if (seen >= rank) return i + 0.5;
    }
    for (int i = 0; i < HIST_MS; i++) {
        seen += hist_ms[i];
        if (seen >= rank) return i * 1000.0 + 500.0;
    }
    return -1;
}

/* ---- sockets ---- */

static int open_member_socket(const char *ip, int server_port) {
    int fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) die("socket");
    int size = SOCK_BUF;
    /* Root may exceed rmem_max; otherwise the plain option is capped by the kernel. */
    if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &size, sizeof size) < 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, sizeof size);
    struct sockaddr_in local = {.sin_family = AF_INET};
    if (inet_pton(AF_INET, ip, &local.sin_addr) != 1) fail("bad address in the members file");
    if (bind(fd, (struct sockaddr *)&local, sizeof local) < 0) die("bind");
    struct sockaddr_in server = {.sin_family = AF_INET, .sin_port = htons((uint16_t)server_port)};
    server.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&server, sizeof server) < 0) die("connect");
    return fd;
}

static void load_members(const char *path, int server_port) {
    char m_ip[48];
    FILE *f = fopen(path, "r");
    if (!f) die(path);
    int cap = 1024;
    members = calloc((size_t)cap, sizeof *members);
    char line[1400], room_hex[600], token[300], boot[40];
    int room, is_sender;
    n_rooms = 0;
    while (fgets(line, sizeof line, f)) {
        int fields = sscanf(line, "%d %d %47s %599s %299s %39s", &room, &is_sender, m_ip, room_hex,
                            token, boot);
        if (fields <= 0) continue; /* a blank line */
        if (fields < 5) fail("bad line in the members file");
        if (n_members == cap) {
            cap *= 2;
            members = realloc(members, (size_t)cap * sizeof *members);
            if (!members) fail("out of memory");
        }
        member_t *m = &members[n_members];
        memset(m, 0, sizeof *m);
        unsigned char name[256];
        int name_len = unhex(room_hex, name, 255);
        int token_len = (int)strlen(token);
        if (name_len < 1 || token_len < 1 || token_len > 255 || room < 0)
            fail("bad line in the members file");
        m->prefix_len = 2 + name_len + token_len;
        m->prefix = malloc((size_t)m->prefix_len);
        m->prefix[0] = (unsigned char)name_len;
        m->prefix[1] = (unsigned char)token_len;
        memcpy(m->prefix + 2, name, (size_t)name_len);
        memcpy(m->prefix + 2 + name_len, token, (size_t)token_len);
        if (fields == 6 && strcmp(boot, "-")) {
            if (unhex(boot, m->boot, BOOT_SIZE) != BOOT_SIZE) fail("bad boot in the members file");
            m->delivery = 1;
            m->ext_len = 3 + token_len;
            m->ext = malloc((size_t)m->ext_len);
            m->ext[0] = 0;
            m->ext[1] = 0; /* the Type: set for each datagram */
            m->ext[2] = (unsigned char)token_len;
            memcpy(m->ext + 3, token, (size_t)token_len);
            n_delivery++;
        }
        m->room = room;
        m->sender = is_sender ? n_senders++ : -1;
        memcpy(m->ip, m_ip, sizeof m->ip);
        if (room + 1 > n_rooms) n_rooms = room + 1;
        n_members++;
    }
    fclose(f);
    if (!n_members) fail("no members");
    rooms = calloc((size_t)n_rooms, sizeof *rooms);
    senders = calloc((size_t)(n_senders ? n_senders : 1), sizeof *senders);
    for (int r = 0; r < n_rooms; r++) rooms[r].first = -1;
    for (int i = 0; i < n_members; i++) {
        member_t *m = &members[i];
        room_t *r = &rooms[m->room];
        if (r->first < 0) r->first = i;
        r->size++;
        if (m->sender >= 0) senders[m->sender].member = i;
        m->fd = open_member_socket(m->ip, server_port);
        struct epoll_event ev = {.events = EPOLLIN, .data.u32 = (uint32_t)i};
        if (epoll_ctl(ep, EPOLL_CTL_ADD, m->fd, &ev) < 0) die("epoll_ctl");
    }
}

/* ---- sending ---- */

/* The start of a chat datagram of member m into b: the version 1 prefix, or a DATA
 * header with the member's next MsgNo. Returns where the text goes. */
static int chat_header(member_t *m, unsigned char *b) {
    if (!m->delivery) {
        memcpy(b, m->prefix, (size_t)m->prefix_len);
        return m->prefix_len;
    }
    memcpy(b, m->ext, (size_t)m->ext_len);
    b[1] = 1; /* DATA */
    put_u32(b + m->ext_len, ++m->msg_no);
    return m->ext_len + 4;
}

static int header_len(const member_t *m) { return m->delivery ? m->ext_len + 4 : m->prefix_len; }

static void send_heartbeat(member_t *m) {
    ssize_t r;
    if (m->delivery) { /* PING: Nonce, Boot */
        unsigned char b[3 + 255 + 4 + BOOT_SIZE];
        memcpy(b, m->ext, (size_t)m->ext_len);
        b[1] = 2;
        put_u32(b + m->ext_len, ++m->nonce);
        memcpy(b + m->ext_len + 4, m->boot, BOOT_SIZE);
        r = send(m->fd, b, (size_t)m->ext_len + 4 + BOOT_SIZE, 0);
    } else {
        r = send(m->fd, m->prefix, (size_t)m->prefix_len, 0);
    }
    if (r < 0) send_fail++;
    else heartbeats++;
}

static void send_probe(int room) {
    member_t *m = &members[rooms[room].first];
    unsigned char *b = sbuf[0];
    int head = chat_header(m, b);
    b[head] = 'P';
    put_hex(b + head + 1, (uint64_t)room, 8);
    if (send(m->fd, b, (size_t)head + 9, 0) < 0) send_fail++;
}

/* Send up to n chat messages from sender s in one sendmmsg; returns how many left. */
static int send_chat(int s, int n, int text_size) {
    sender_t *sd = &senders[s];
    member_t *m = &members[sd->member];
    struct mmsghdr msgs[BATCH];
    struct iovec iov[BATCH];
    uint64_t t = now_ns();
    int len = header_len(m) + text_size;
    if (n > BATCH) n = BATCH;
    for (int i = 0; i < n; i++) {
        unsigned char *b = sbuf[i];
        unsigned char *text = b + chat_header(m, b);
        text[0] = 'M';
        put_hex(text + 1, t, 16);
        put_hex(text + 17, (uint64_t)s, 8);
        put_hex(text + 25, (uint64_t)(sd->sent + 1 + (uint32_t)i), 8);
        memset(text + TEXT_HEAD, 'x', (size_t)(text_size - TEXT_HEAD));
        iov[i].iov_base = b;
        iov[i].iov_len = (size_t)len;
        memset(&msgs[i], 0, sizeof msgs[i]);
        msgs[i].msg_hdr.msg_iov = &iov[i];
        msgs[i].msg_hdr.msg_iovlen = 1;
    }
    int done = sendmmsg(m->fd, msgs, (unsigned)n, 0);
    if (m->delivery && done < n) m->msg_no -= (uint32_t)(n - (done < 0 ? 0 : done));
    if (done < 0) {
        send_fail++;
        return 0;
    }
    sd->sent += (uint32_t)done;
    sent_total += (uint64_t)done;
    inflight += done;
    if (t >= win_start && t < win_end) {
        sent_window += (uint64_t)done;
        expected += (uint64_t)done * (uint64_t)rooms[m->room].size;
    }
    return done;
}

/* ---- receiving ---- */

static void on_datagram(int mi, const unsigned char *d, int len, uint64_t now) {
    member_t *m = &members[mi];
    int off;
    if (fmt == FMT_OCM) {
        if (len < 6) {
            malformed++;
            return;
        }
        off = 6 + d[5];
        switch (d[0]) {
        case 1: break;
        case 2: notices++; return;
        case 3: closed++; return;
        case 4: errors++; return;
        case CHAT_KIND: off += 4; break; /* the MsgNo, then the text */
        case STATUS_KIND: statuses++; return;
        case ACCEPTED_KIND: accepted++; return; /* a DATA that arrived twice: none here */
        default:
            if (d[0] > LAST_KIND) malformed++;
            else errors++; /* LOST, DEPARTED, RESTARTED: never asked for */
            return;
        }
    } else {
        if (len < 2) {
            malformed++;
            return;
        }
        off = 2 + d[0] + d[1];
    }
    if (off > len) {
        malformed++;
        return;
    }
    const unsigned char *text = d + off;
    int text_len = len - off;
    if (text_len == 0) return; /* a heartbeat, forwarded by a bare relay */
    uint64_t v;
    if (text[0] == 'P' && text_len >= 9 && get_hex(text + 1, 8, &v)) {
        if ((int)v == m->room && !m->registered) {
            m->registered = 1;
            rooms[m->room].registered++;
            n_registered++;
        }
        return;
    }
    uint64_t ts, s, seq;
    if (text[0] != 'M' || text_len < TEXT_HEAD || !get_hex(text + 1, 16, &ts) ||
        !get_hex(text + 17, 8, &s) || !get_hex(text + 25, 8, &seq)) {
        other_msgs++;
        return;
    }
    if (ts >= win_start && ts < win_end) {
        delivered++;
        hist_add(now > ts ? now - ts : 0);
    }
    if (s < (uint64_t)n_senders && senders[s].member == mi) {
        sender_t *sd = &senders[s];
        if ((uint32_t)seq > sd->echoed) {
            inflight -= (int64_t)((uint32_t)seq - sd->echoed);
            sd->echoed = (uint32_t)seq;
        }
    }
}

static uint64_t last_receive;

/* Wait at most timeout_ns for datagrams and take everything that is ready. */
static int poll_once(uint64_t timeout_ns) {
    struct epoll_event evs[EVENTS];
    int n;
#if defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 35))
    struct timespec ts = {.tv_sec = (time_t)(timeout_ns / 1000000000u),
                          .tv_nsec = (long)(timeout_ns % 1000000000u)};
    n = epoll_pwait2(ep, evs, EVENTS, &ts, NULL);
#else
    n = epoll_wait(ep, evs, EVENTS, (int)((timeout_ns + 999999) / 1000000));
#endif
    if (n < 0) {
        if (errno == EINTR) return 0;
        die("epoll_wait");
    }
    static struct mmsghdr msgs[BATCH];
    static struct iovec iov[BATCH];
    int got = 0;
    for (int e = 0; e < n; e++) {
        int mi = (int)evs[e].data.u32;
        for (int rounds = 0; rounds < 64; rounds++) {
            for (int i = 0; i < BATCH; i++) {
                iov[i].iov_base = rbuf[i];
                iov[i].iov_len = MAX_DGRAM + 1;
                memset(&msgs[i].msg_hdr, 0, sizeof msgs[i].msg_hdr);
                msgs[i].msg_hdr.msg_iov = &iov[i];
                msgs[i].msg_hdr.msg_iovlen = 1;
            }
            int r = recvmmsg(members[mi].fd, msgs, BATCH, MSG_DONTWAIT, NULL);
            if (r <= 0) break;
            uint64_t now = now_ns();
            last_receive = now;
            for (int i = 0; i < r; i++) on_datagram(mi, rbuf[i], (int)msgs[i].msg_len, now);
            got += r;
            if (r < BATCH) break;
        }
    }
    return got;
}

/* ---- phases ---- */

/* Receive until `due_ns` after t0. (poll_once returns as soon as anything arrives.) */
static void pace(uint64_t t0, uint64_t due_ns) {
    for (uint64_t elapsed = now_ns() - t0; elapsed < due_ns; elapsed = now_ns() - t0)
        poll_once(due_ns - elapsed);
}

/* Heartbeat every member once, paced at `rate` per second. */
static void register_members(double rate, int only_unregistered) {
    uint64_t t0 = now_ns();
    int done = 0;
    for (int i = 0; i < n_members; i++) {
        if (only_unregistered && members[i].registered) continue;
        send_heartbeat(&members[i]);
        done++;
        pace(t0, (uint64_t)((double)done / rate * 1e9));
    }
}

/* Probe every room with unregistered members until all members saw their probe. */
static void verify_registration(double rate, int rounds) {
    for (int round = 0; round < rounds && n_registered < n_members; round++) {
        if (round) register_members(rate, 1);
        poll_once(10 * 1000000u); /* let the heartbeats land before the probes */
        uint64_t t0 = now_ns();
        int done = 0;
        for (int r = 0; r < n_rooms; r++) {
            if (!rooms[r].size || rooms[r].registered == rooms[r].size) continue;
            send_probe(r);
            done += rooms[r].size;
            pace(t0, (uint64_t)((double)done / rate * 1e9));
        }
        uint64_t until = now_ns() + 300 * 1000000u;
        while (n_registered < n_members && now_ns() < until) poll_once(5 * 1000000u);
    }
}

int run(int argc, char **argv) {
    int server_port = 0, server_pid = 0, mode = MODE_WINDOW, window = 32, text_size = 100;
    double rate = 1000, warmup = 0.5, duration = 2.0, drain = 0.5, hb_interval = 1.0;
    double register_rate = 20000;
    int spin = 0;
    const char *members_path = NULL;
    for (int i = 2; i + 1 < argc; i += 2) {
        const char *k = argv[i], *v = argv[i + 1];
        if (!strcmp(k, "--server")) server_port = atoi(v);
        else if (!strcmp(k, "--server-pid")) server_pid = atoi(v);
        else if (!strcmp(k, "--members")) members_path = v;
        else if (!strcmp(k, "--format")) fmt = strcmp(v, "bare") ? FMT_OCM : FMT_BARE;
        else if (!strcmp(k, "--mode"))
            mode = !strcmp(v, "rate") ? MODE_RATE : !strcmp(v, "idle") ? MODE_IDLE : MODE_WINDOW;
        else if (!strcmp(k, "--window")) window = atoi(v);
        else if (!strcmp(k, "--rate")) rate = atof(v);
        else if (!strcmp(k, "--text-size")) text_size = atoi(v);
        else if (!strcmp(k, "--warmup")) warmup = atof(v);
        else if (!strcmp(k, "--duration")) duration = atof(v);
        else if (!strcmp(k, "--drain")) drain = atof(v);
        else if (!strcmp(k, "--heartbeat")) hb_interval = atof(v);
        else if (!strcmp(k, "--register-rate")) register_rate = atof(v);
        else if (!strcmp(k, "--spin")) spin = atoi(v);
        else {
            fprintf(stderr, "loadgen: unknown option %s\n", k);
            return 2;
        }
    }
    if (!server_port || !members_path) fail("--server and --members are required");
    if (text_size < TEXT_HEAD || text_size > MAX_DGRAM - 512) fail("--text-size out of range");
    if (window < 1 || rate <= 0 || duration <= 0 || duration > 600 || warmup > 600 || drain > 60)
        fail("bad --window, --rate or durations");
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    ep = epoll_create1(EPOLL_CLOEXEC);
    if (ep < 0) die("epoll_create1");
    load_members(members_path, server_port);
    if (mode != MODE_IDLE && !n_senders) fail("no senders");

    /* Nothing counts until the window opens. */
    win_start = win_end = UINT64_MAX;
    register_members(register_rate, 0);
    verify_registration(register_rate, 8);
    int unregistered = n_members - n_registered;
    poll_once(20 * 1000000u);

    uint64_t t0 = now_ns();
    win_start = t0 + (uint64_t)(warmup * 1e9);
    win_end = win_start + (uint64_t)(duration * 1e9);
    double server_cpu0 = -1, server_cpu1 = -1, self_cpu0 = 0, self_cpu1 = 0;
    int in_window = 0;
    uint64_t hb_ns = (uint64_t)(hb_interval * 1e9), hb_sent = 0;
    uint64_t last_progress = t0, rate_sent = 0;
    int64_t last_inflight = 0;
    int next_sender = 0;
    int per_sender = n_senders ? (window + n_senders - 1) / n_senders : 1;
    uint64_t heartbeats_before = heartbeats;

    for (;;) {
        uint64_t now = now_ns();
        if (!in_window && now >= win_start) {
            in_window = 1;
            server_cpu0 = proc_cpu_seconds(server_pid);
            self_cpu0 = self_cpu_seconds();
        }
        if (now >= win_end) break;
        uint64_t wake = win_end;
        if (!in_window && win_start < wake) wake = win_start;

        /* heartbeats (a bare relay would forward them: it needs none after registering) */
        if (hb_ns && fmt == FMT_OCM) {
            uint64_t due = (uint64_t)((double)(now - t0) / (double)hb_ns * n_members);
            while (hb_sent < due) send_heartbeat(&members[hb_sent++ % (uint64_t)n_members]);
            uint64_t next = t0 + (uint64_t)((double)(hb_sent + 1) * (double)hb_ns / n_members);
            if (next < wake) wake = next;
        }

        if (mode == MODE_WINDOW) {
            if (inflight != last_inflight || inflight < window) last_progress = now;
            if (inflight >= window && now - last_progress > STALL_NS) {
                /* the window's datagrams were lost: forget them and carry on */
                for (int s = 0; s < n_senders; s++) senders[s].echoed = senders[s].sent;
                inflight = 0;
                stalls++;
            }
            for (int tries = 0; inflight < window && tries < n_senders; tries++) {
                int n = (int)(window - inflight);
                if (n > per_sender) n = per_sender;
                send_chat(next_sender, n, text_size);
                next_sender = (next_sender + 1) % n_senders;
            }
            last_inflight = inflight;
            uint64_t stall_check = now + 5 * 1000000u;
            if (stall_check < wake) wake = stall_check;
        } else if (mode == MODE_RATE) {
            uint64_t due = (uint64_t)((double)(now - t0) * 1e-9 * rate);
            while (rate_sent < due) {
                int n = n_senders == 1 ? (int)(due - rate_sent) : 1;
                int done = send_chat(next_sender, n, text_size);
                next_sender = (next_sender + 1) % n_senders;
                if (done <= 0) break;
                rate_sent += (uint64_t)done;
            }
            uint64_t next = t0 + (uint64_t)((double)(rate_sent + 1) / rate * 1e9);
            if (next < wake) wake = next;
        }
        now = now_ns();
        poll_once(spin || wake <= now ? 0 : wake - now);
    }
    server_cpu1 = proc_cpu_seconds(server_pid);
    self_cpu1 = self_cpu_seconds();
    uint64_t window_heartbeats = heartbeats - heartbeats_before;

    /* Drain: until nothing arrives for 100 ms, at most `drain` seconds. */
    uint64_t drain_end = now_ns() + (uint64_t)(drain * 1e9);
    last_receive = now_ns();
    while (now_ns() < drain_end && now_ns() - last_receive < 100 * 1000000u) poll_once(10 * 1000000u);

    double server_cpu = -1;
    if (server_cpu0 >= 0 && server_cpu1 >= 0) server_cpu = (server_cpu1 - server_cpu0) / duration * 100;
    double loss = expected ? 100.0 * (1.0 - (double)delivered / (double)expected) : 0;
    printf("{\"members\": %d, \"rooms\": %d, \"senders\": %d, \"unregistered\": %d, "
           "\"window_s\": %.3f, \"sent\": %" PRIu64 ", \"offered_per_s\": %.1f, "
           "\"expected\": %" PRIu64 ", \"delivered\": %" PRIu64 ", \"delivered_per_s\": %.1f, "
           "\"loss_pct\": %.3f, \"p50_us\": %.1f, \"p99_us\": %.1f, \"max_us\": %.1f, "
           "\"server_cpu_pct\": %.1f, \"generator_cpu_pct\": %.1f, \"heartbeats_per_s\": %.1f, "
           "\"notices\": %" PRIu64 ", \"closed\": %" PRIu64 ", \"errors\": %" PRIu64
           ", \"malformed\": %" PRIu64 ", \"stalls\": %" PRIu64 ", \"send_failures\": %" PRIu64
           ", \"delivery_members\": %d, \"statuses\": %" PRIu64 ", \"accepted\": %" PRIu64 "}\n",
           n_members, n_rooms, n_senders, unregistered, duration, sent_window,
           (double)sent_window / duration, expected, delivered, (double)delivered / duration, loss,
           delivered ? hist_quantile(0.50) : -1.0, delivered ? hist_quantile(0.99) : -1.0,
           (double)lat_max_ns / 1000.0, server_cpu, (self_cpu1 - self_cpu0) / duration * 100,
           (double)window_heartbeats / duration, notices, closed, errors, malformed, stalls,
           send_fail, n_delivery, statuses, accepted);
    (void)other_msgs;
    return 0;
}

/* ---- a bare relay in C: the ceiling the generator can drive ---- */

typedef struct {
    uint64_t key; /* ip << 16 | port, 0 = empty */
    int room;
} addr_slot_t;

typedef struct {
    unsigned char key[258];
    int key_len;
    int count, cap;
    struct sockaddr_in *addrs;
} relay_room_t;

#define ADDR_SLOTS (1 << 16)
#define ROOM_SLOTS (1 << 15)

static addr_slot_t addr_table[ADDR_SLOTS];
static int room_table[ROOM_SLOTS]; /* index + 1 into relay_rooms, 0 = empty */
static relay_room_t *relay_rooms;
static int n_relay_rooms;

static uint64_t hash_bytes(const unsigned char *p, int n) {
    uint64_t h = 1469598103934665603u;
    for (int i = 0; i < n; i++) h = (h ^ p[i]) * 1099511628211u;
    return h;
}

static int relay_room_for(const unsigned char *key, int key_len) {
    uint64_t h = hash_bytes(key, key_len);
    for (uint64_t i = 0; i < ROOM_SLOTS; i++) {
        int *slot = &room_table[(h + i) & (ROOM_SLOTS - 1)];
        if (!*slot) {
            if (n_relay_rooms >= ROOM_SLOTS / 2) return -1;
            relay_room_t *r = &relay_rooms[n_relay_rooms];
            memcpy(r->key, key, (size_t)key_len);
            r->key_len = key_len;
            *slot = ++n_relay_rooms;
            return *slot - 1;
        }
        relay_room_t *r = &relay_rooms[*slot - 1];
        if (r->key_len == key_len && !memcmp(r->key, key, (size_t)key_len)) return *slot - 1;
    }
    return -1;
}

int relay(int argc, char **argv) {
    int port = 0;
    double lifetime = 60;
    for (int i = 2; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--port")) port = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--lifetime")) lifetime = atof(argv[i + 1]);
        else fail("unknown relay option");
    }
    if (lifetime <= 0 || lifetime > 3600) fail("--lifetime out of range");
    relay_rooms = calloc(ROOM_SLOTS / 2, sizeof *relay_rooms);
    int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0) die("socket");
    struct sockaddr_in local = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    local.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(fd, (struct sockaddr *)&local, sizeof local) < 0) die("bind");
    struct timeval tv = {.tv_sec = 0, .tv_usec = 200000};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    socklen_t len = sizeof local;
    getsockname(fd, (struct sockaddr *)&local, &len);
    printf("C relay listening on UDP port %d\n", ntohs(local.sin_port));
    fflush(stdout);

    static struct mmsghdr in[BATCH], out[1024];
    static struct iovec in_iov[BATCH], out_iov[1024];
    static struct sockaddr_in from[BATCH];
    uint64_t deadline = now_ns() + (uint64_t)(lifetime * 1e9);
    while (now_ns() < deadline) {
        for (int i = 0; i < BATCH; i++) {
            in_iov[i].iov_base = rbuf[i];
            in_iov[i].iov_len = MAX_DGRAM + 1;
            memset(&in[i].msg_hdr, 0, sizeof in[i].msg_hdr);
            in[i].msg_hdr.msg_iov = &in_iov[i];
            in[i].msg_hdr.msg_iovlen = 1;
            in[i].msg_hdr.msg_name = &from[i];
            in[i].msg_hdr.msg_namelen = sizeof from[i];
        }
        int n = recvmmsg(fd, in, BATCH, MSG_WAITFORONE, NULL);
        if (n <= 0) continue; /* timeout: look at the deadline */
        int queued = 0;
        for (int i = 0; i < n; i++) {
            const unsigned char *d = rbuf[i];
            int dlen = (int)in[i].msg_len;
            uint64_t key = ((uint64_t)from[i].sin_addr.s_addr << 16) | from[i].sin_port;
            uint64_t h = key * 11400714819323198485u;
            addr_slot_t *slot = NULL;
            for (uint64_t j = 0; j < ADDR_SLOTS; j++) {
                slot = &addr_table[((h >> 48) + j) & (ADDR_SLOTS - 1)];
                if (!slot->key || slot->key == key) break;
            }
            if (!slot->key) {
                /* unknown source: this datagram registers it in the room it names */
                int key_len = dlen >= 1 ? 2 + d[0] : 0;
                if (key_len > dlen) key_len = dlen;
                int r = relay_room_for(d, key_len);
                if (r < 0) continue;
                relay_room_t *room = &relay_rooms[r];
                if (room->count == room->cap) {
                    room->cap = room->cap ? room->cap * 2 : 8;
                    room->addrs = realloc(room->addrs, (size_t)room->cap * sizeof *room->addrs);
                }
                room->addrs[room->count++] = from[i];
                slot->key = key;
                slot->room = r;
                continue;
            }
            relay_room_t *room = &relay_rooms[slot->room];
            for (int a = 0; a < room->count; a++) {
                if (queued == 1024) {
                    sendmmsg(fd, out, (unsigned)queued, 0);
                    queued = 0;
                }
                out_iov[queued].iov_base = rbuf[i];
                out_iov[queued].iov_len = (size_t)dlen;
                memset(&out[queued].msg_hdr, 0, sizeof out[queued].msg_hdr);
                out[queued].msg_hdr.msg_iov = &out_iov[queued];
                out[queued].msg_hdr.msg_iovlen = 1;
                out[queued].msg_hdr.msg_name = &room->addrs[a];
                out[queued].msg_hdr.msg_namelen = sizeof room->addrs[a];
                queued++;
            }
        }
        if (queued) sendmmsg(fd, out, (unsigned)queued, 0);
    }
    return 0;
}

int main(int argc, char **argv) {
    if (argc >= 2 && !strcmp(argv[1], "run")) return run(argc, argv);
    if (argc >= 2 && !strcmp(argv[1], "relay")) return relay(argc, argv);
    fprintf(stderr, "usage: loadgen run --server PORT --members FILE [options]\n"
                    "       loadgen relay --port PORT --lifetime SECONDS\n");
    return 2;
}
