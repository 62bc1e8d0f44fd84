/* The physical floor of a push: CPU time per 100-byte write() to a loopback TCP socket,
 * spread round-robin over as many connections as a fan-out has recipients. A child process
 * holds the receiving ends (so each process stays under the open-files cap); only the
 * writer's cost is measured, including the loopback delivery the kernel does in the
 * writer's context.
 *
 * By default nobody reads. Given a reader CPU (a number, or "any" for no pinning), the child
 * runs there, waits in epoll on every receiving end and reads what arrives, as a server's
 * live clients do: each write then also pays for waking a reader that sleeps in epoll on
 * another core (about 1 us a write on loopback), which a server's writes to live clients
 * pay too.
 * Usage: floor [connections=10000] [rounds=20] [reader-cpu]    Prints one JSON line. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#define MESSAGE 100

static double cpu_seconds(void) {
    struct rusage u;
    getrusage(RUSAGE_SELF, &u);
    return u.ru_utime.tv_sec + u.ru_stime.tv_sec + (u.ru_utime.tv_usec + u.ru_stime.tv_usec) / 1e6;
}

/* The live reader: reads every socket as data arrives until `expected` bytes came in, then
 * reports the count on `done`. */
static int read_all(int *sockets, int connections, long expected, const char *cpu, int done) {
    if (strcmp(cpu, "any") != 0) {
        cpu_set_t set;
        CPU_ZERO(&set);
        CPU_SET(atoi(cpu), &set);
        if (sched_setaffinity(0, sizeof set, &set)) return perror("sched_setaffinity"), 1;
    }
    int poller = epoll_create1(0);
    if (poller < 0) return perror("epoll_create1"), 1;
    for (int i = 0; i < connections; i++) {
        struct epoll_event interest = {.events = EPOLLIN, .data.fd = sockets[i]};
        fcntl(sockets[i], F_SETFL, O_NONBLOCK);
        if (epoll_ctl(poller, EPOLL_CTL_ADD, sockets[i], &interest)) return perror("epoll_ctl"), 1;
    }
    char ready = 1, buf[65536];
    if (write(done, &ready, 1) != 1) return perror("ready"), 1;
    struct epoll_event events[1024];
    long got = 0;
    while (got < expected) {
        int n = epoll_wait(poller, events, 1024, -1);
        for (int i = 0; i < n; i++) {
            ssize_t r = read(events[i].data.fd, buf, sizeof buf);
            if (r > 0) got += r;
        }
    }
    return write(done, &got, sizeof got) == sizeof got ? 0 : 1;
}

int main(int argc, char **argv) {
    int connections = argc > 1 ? atoi(argv[1]) : 10000, rounds = argc > 2 ? atoi(argv[2]) : 20;
    const char *reader_cpu = argc > 3 ? argv[3] : NULL;
    long expected = (long)connections * rounds * MESSAGE;
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof addr;
    int listener = socket(AF_INET, SOCK_STREAM, 0), *writers = calloc(connections, sizeof(int));
    int done[2];
    if (bind(listener, (struct sockaddr *)&addr, len) || listen(listener, 4096) ||
        getsockname(listener, (struct sockaddr *)&addr, &len) || pipe(done)) return perror("listen"), 1;
    pid_t receiver = fork();
    if (receiver == 0) {
        int *readers = calloc(connections, sizeof(int));
        for (int i = 0; i < connections; i++)
            if ((readers[i] = socket(AF_INET, SOCK_STREAM, 0)) < 0 ||
                connect(readers[i], (struct sockaddr *)&addr, len)) return perror("connect"), 1;
        if (reader_cpu) return read_all(readers, connections, expected, reader_cpu, done[1]);
        pause();
    }
    for (int i = 0; i < connections; i++)
        if ((writers[i] = accept(listener, NULL, NULL)) < 0) return perror("accept"), 1;
    char ready;
    if (reader_cpu && read(done[0], &ready, 1) != 1) return fprintf(stderr, "floor: the reader failed\n"), 1;
    char message[MESSAGE];
    memset(message, 'x', sizeof message);
    double before = cpu_seconds();
    for (int r = 0; r < rounds; r++)
        for (int i = 0; i < connections; i++)
            if (write(writers[i], message, sizeof message) != sizeof message) return perror("write"), 1;
    double spent = cpu_seconds() - before;
    long got = expected;
    if (reader_cpu && read(done[0], &got, sizeof got) != sizeof got) got = -1;
    kill(receiver, SIGKILL);
    if (got != expected) return fprintf(stderr, "floor: the reader got %ld of %ld bytes\n", got, expected), 1;
    printf("{\"connections\":%d,\"writes\":%d,\"readers\":\"%s\",\"cpu_us_per_write\":%.2f}\n", connections,
           connections * rounds, reader_cpu ? "live" : "none", spent * 1e6 / ((double)connections * rounds));
    return 0;
}
