/* The physical floor of a push: CPU time per 100-byte write() to a loopback TCP socket,
 * spread round-robin over as many connections as a fan-out has recipients. A child process
 * holds the receiving ends (so each process stays under the open-files cap) and never reads:
 * only the writer's cost is measured, including the loopback delivery the kernel does in the
 * writer's context.
 * Usage: floor [connections=10000] [rounds=20]    Prints one JSON line. */
#include <arpa/inet.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

static double cpu_seconds(void) {
    struct rusage u;
    getrusage(RUSAGE_SELF, &u);
    return u.ru_utime.tv_sec + u.ru_stime.tv_sec + (u.ru_utime.tv_usec + u.ru_stime.tv_usec) / 1e6;
}

int main(int argc, char **argv) {
    int connections = argc > 1 ? atoi(argv[1]) : 10000, rounds = argc > 2 ? atoi(argv[2]) : 20;
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof addr;
    int listener = socket(AF_INET, SOCK_STREAM, 0), *writers = calloc(connections, sizeof(int));
    if (bind(listener, (struct sockaddr *)&addr, len) || listen(listener, 4096) ||
        getsockname(listener, (struct sockaddr *)&addr, &len)) return perror("listen"), 1;
    pid_t receiver = fork();
    if (receiver == 0) {
        for (int i = 0; i < connections; i++)
            if (connect(socket(AF_INET, SOCK_STREAM, 0), (struct sockaddr *)&addr, len)) return perror("connect"), 1;
        pause();
    }
    for (int i = 0; i < connections; i++)
        if ((writers[i] = accept(listener, NULL, NULL)) < 0) return perror("accept"), 1;
    char message[100];
    for (int i = 0; i < 100; i++) message[i] = 'x';
    double before = cpu_seconds();
    for (int r = 0; r < rounds; r++)
        for (int i = 0; i < connections; i++)
            if (write(writers[i], message, sizeof message) != sizeof message) return perror("write"), 1;
    double spent = cpu_seconds() - before;
    kill(receiver, SIGKILL);
    printf("{\"connections\":%d,\"writes\":%d,\"cpu_us_per_write\":%.2f}\n", connections,
           connections * rounds, spent * 1e6 / ((double)connections * rounds));
    return 0;
}
