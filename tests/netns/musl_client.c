/*
 * A pod's resolver client: getaddrinfo(NAME, AF_UNSPEC) and one numeric address
 * per line on stdout. Built with `musl-gcc -static` it is a musl (Alpine-like)
 * job image: musl sends the A and AAAA queries in parallel from one UDP socket,
 * applies resolv.conf's search list and ndots, and never retries over TCP when
 * an answer comes back truncated (musl 1.2.3).
 *
 * Exit status: 0 with at least one address, 2 when getaddrinfo fails
 * (the gai_strerror text goes to stderr), 64 on bad usage.
 */
#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

int main(int argc, char **argv)
{
    struct addrinfo hints;
    struct addrinfo *res = NULL;
    struct addrinfo *p;
    char text[INET6_ADDRSTRLEN];
    int rc;

    if (argc != 2) {
        fprintf(stderr, "usage: %s NAME\n", argv[0]);
        return 64;
    }
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    /* One socket type, so each address is listed once. */
    hints.ai_socktype = SOCK_STREAM;
    rc = getaddrinfo(argv[1], NULL, &hints, &res);
    if (rc != 0) {
        fprintf(stderr, "getaddrinfo %s: %s\n", argv[1], gai_strerror(rc));
        return 2;
    }
    for (p = res; p != NULL; p = p->ai_next) {
        const void *addr;
        if (p->ai_family == AF_INET)
            addr = &((const struct sockaddr_in *)p->ai_addr)->sin_addr;
        else if (p->ai_family == AF_INET6)
            addr = &((const struct sockaddr_in6 *)p->ai_addr)->sin6_addr;
        else
            continue;
        if (inet_ntop(p->ai_family, addr, text, sizeof text) != NULL)
            puts(text);
    }
    freeaddrinfo(res);
    return 0;
}
