/* libmodbus reference client for bench/modbus_rps.py.
 *
 * usage: client PORT N COUNT [SECONDS]
 * One TCP connection to 127.0.0.1:PORT; sequential modbus_read_registers()
 * (function 0x03) of COUNT registers, one request outstanding. Stops after N
 * requests (N = 0: no cap) or SECONDS (0 or absent: no limit), whichever is
 * first; 200 untimed warm-up requests first. Request i reads address
 * (i * 37) % (10000 - COUNT); every value is checked against the server's
 * reg(a) = (a * 31 + 7) & 0xFFFF. Prints one JSON line.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include <modbus/modbus.h>

#define NB_REGS 10000
#define WARMUP 200

static double now(clockid_t clk) {
    struct timespec ts;
    clock_gettime(clk, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int read_checked(modbus_t *ctx, long i, int count, uint16_t *buf) {
    int addr = (int)((i * 37) % (NB_REGS - count));
    if (modbus_read_registers(ctx, addr, count, buf) != count) {
        fprintf(stderr, "read %d failed: %s\n", addr, modbus_strerror(errno));
        return -1;
    }
    for (int k = 0; k < count; k++) {
        uint16_t want = (uint16_t)(((addr + k) * 31 + 7) & 0xFFFF);
        if (buf[k] != want) {
            fprintf(stderr, "bad value at %d: %u != %u\n", addr + k, buf[k], want);
            return -1;
        }
    }
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 4 || argc > 5) {
        fprintf(stderr, "usage: %s PORT N COUNT [SECONDS]\n", argv[0]);
        return 2;
    }
    int port = atoi(argv[1]);
    long n = atol(argv[2]);
    int count = atoi(argv[3]);
    double seconds = argc == 5 ? atof(argv[4]) : 0.0;
    if (count < 1 || count > MODBUS_MAX_READ_REGISTERS || n < 0 || (n == 0 && seconds <= 0)) {
        fprintf(stderr, "bad arguments\n");
        return 2;
    }

    modbus_t *ctx = modbus_new_tcp("127.0.0.1", port);
    if (ctx == NULL || modbus_set_slave(ctx, 1) < 0 || modbus_connect(ctx) < 0) {
        fprintf(stderr, "connect failed: %s\n", modbus_strerror(errno));
        if (ctx) modbus_free(ctx);
        return 1;
    }
    modbus_set_response_timeout(ctx, 3, 0);

    uint16_t buf[MODBUS_MAX_READ_REGISTERS];
    int rc = 0;
    for (long i = 0; i < WARMUP && rc == 0; i++) rc = read_checked(ctx, i, count, buf);

    long done = 0;
    double t0 = now(CLOCK_MONOTONIC), c0 = now(CLOCK_PROCESS_CPUTIME_ID);
    double deadline = seconds > 0 ? t0 + seconds : 0.0;
    while (rc == 0 && (n == 0 || done < n)) {
        rc = read_checked(ctx, done, count, buf);
        if (rc == 0) done++;
        if (deadline > 0 && (done & 255) == 0 && now(CLOCK_MONOTONIC) >= deadline) break;
    }
    double dt = now(CLOCK_MONOTONIC) - t0, cpu = now(CLOCK_PROCESS_CPUTIME_ID) - c0;

    modbus_close(ctx);
    modbus_free(ctx);
    if (rc != 0) return 1;
    printf("{\"requests\": %ld, \"seconds\": %.6f, \"rps\": %.1f, \"cpu_us_per_request\": %.3f}\n",
           done, dt, done / dt, done ? cpu * 1e6 / done : 0.0);
    return 0;
}
