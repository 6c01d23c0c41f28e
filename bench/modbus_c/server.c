/* Reference Modbus TCP server for bench/modbus_rps.py, built on libmodbus.
 *
 * usage: server PORT
 * Listens on 127.0.0.1:PORT; holding and input registers 0..9999 hold
 * reg(i) = (i * 31 + 7) & 0xFFFF. Serves one client connection at a time and
 * accepts the next one when it disconnects. Prints "ready" once listening.
 * SIGTERM/SIGINT: stops after shutting the sockets down, frees, exits 0.
 */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <modbus/modbus.h>

#define NB_REGS 10000

static volatile sig_atomic_t stop = 0;
static volatile sig_atomic_t listen_fd = -1;
static volatile sig_atomic_t client_fd = -1;

static void on_signal(int sig) {
    (void)sig;
    stop = 1;
    /* shutdown() is async-signal-safe; it wakes accept()/select() in libmodbus. */
    if (client_fd >= 0) shutdown(client_fd, SHUT_RDWR);
    if (listen_fd >= 0) shutdown(listen_fd, SHUT_RDWR);
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: %s PORT\n", argv[0]);
        return 2;
    }
    int port = atoi(argv[1]);
    if (port <= 0 || port > 65535) {
        fprintf(stderr, "bad port: %s\n", argv[1]);
        return 2;
    }

    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal; /* no SA_RESTART: accept() returns EINTR */
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    modbus_t *ctx = modbus_new_tcp("127.0.0.1", port);
    modbus_mapping_t *map = modbus_mapping_new(0, 0, NB_REGS, NB_REGS);
    if (ctx == NULL || map == NULL) {
        fprintf(stderr, "init failed: %s\n", modbus_strerror(errno));
        return 1;
    }
    for (int i = 0; i < NB_REGS; i++) {
        uint16_t v = (uint16_t)((i * 31 + 7) & 0xFFFF);
        map->tab_registers[i] = v;
        map->tab_input_registers[i] = v;
    }

    int s = modbus_tcp_listen(ctx, 4);
    if (s < 0) {
        fprintf(stderr, "listen failed: %s\n", modbus_strerror(errno));
        modbus_mapping_free(map);
        modbus_free(ctx);
        return 1;
    }
    listen_fd = s;
    printf("ready\n");
    fflush(stdout);

    uint8_t query[MODBUS_TCP_MAX_ADU_LENGTH];
    int rc_exit = 0;
    while (!stop) {
        int c = modbus_tcp_accept(ctx, &s);
        if (c < 0) {
            if (stop) break;
            if (errno == EINTR || errno == ECONNABORTED) continue;
            fprintf(stderr, "accept failed: %s\n", modbus_strerror(errno));
            rc_exit = 1;
            break;
        }
        client_fd = c;
        int one = 1;
        setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        while (!stop) {
            int rc = modbus_receive(ctx, query);
            if (rc > 0) {
                if (modbus_reply(ctx, query, rc, map) < 0) break;
            } else if (rc < 0) {
                break; /* peer closed, reset or bad frame: drop the connection */
            } /* rc == 0: request to ignore */
        }
        client_fd = -1;
        modbus_close(ctx);
    }

    close(s);
    modbus_mapping_free(map);
    modbus_free(ctx);
    return rc_exit;
}
