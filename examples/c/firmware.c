/*
 * A firmware process that embeds the Tether agent (libtether_agent): it serves a tiny HTTP
 * page on 127.0.0.1 itself, publishes it as service "firmware-ui", adds a diagnostics check of
 * its own and runs until stdin reaches end of file (Ctrl-D), then stops cleanly.
 *
 * Usage: firmware URL KEY SECRET   (or TETHER_URL, TETHER_KEY, TETHER_SECRET in the environment)
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "tether_agent.h"

#define PAGE "hello from the firmware\n"

struct server {
  int fd;
  unsigned short port;
  pthread_t thread;
};

/* Answers every connection with PAGE until the listening socket is shut down. */
static void *serve(void *arg) {
  struct server *s = arg;
  for (;;) {
    int c = accept(s->fd, NULL, NULL);
    if (c < 0) return NULL;
    char buf[2048];
    ssize_t n = read(c, buf, sizeof buf); /* one small request; the body is ignored */
    if (n > 0) {
      char reply[256];
      int len = snprintf(reply, sizeof reply,
                         "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
                         "Content-Length: %zu\r\nConnection: close\r\n\r\n%s",
                         strlen(PAGE), PAGE);
      if (write(c, reply, (size_t)len) < 0) perror("write");
    }
    close(c);
  }
}

static int server_start(struct server *s) {
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t len = sizeof a;
  s->fd = socket(AF_INET, SOCK_STREAM, 0);
  if (s->fd < 0 || bind(s->fd, (struct sockaddr *)&a, sizeof a) != 0 || listen(s->fd, 16) != 0 ||
      getsockname(s->fd, (struct sockaddr *)&a, &len) != 0)
    return -1;
  s->port = ntohs(a.sin_port);
  return pthread_create(&s->thread, NULL, serve, s);
}

static void server_stop(struct server *s) {
  shutdown(s->fd, SHUT_RDWR); /* wakes accept() */
  pthread_join(s->thread, NULL);
  close(s->fd);
}

/* Runs on a library thread at every health-report collection. */
static void firmware_check(void *userdata, tether_diagnostics_plugin *plugin) {
  const struct server *s = userdata;
  char value[32];
  snprintf(value, sizeof value, "port %u", (unsigned)s->port);
  tether_diagnostics_plugin_add_check(plugin, "web-ui", TETHER_STATUS_OK, value);
  tether_diagnostics_plugin_set_summary(plugin, "firmware web UI is serving");
}

/* Runs on a library thread for every state change and operator action. */
static void on_event(void *userdata, const tether_event *event) {
  (void)userdata;
  static const char *names[] = {"", "connecting", "connected", "attempt failed", "disconnected",
                                "session closed", "service opened", "terminal opened",
                                "command applied", "stopped"};
  const char *name = event->kind < sizeof names / sizeof *names ? names[event->kind] : "?";
  fprintf(stderr, "firmware: event %s%s%s\n", name, event->detail ? ": " : "",
          event->detail ? event->detail : "");
}

static void on_log(void *userdata, tether_log_level level, const char *line) {
  (void)userdata;
  (void)level;
  fprintf(stderr, "firmware: log %s\n", line);
}

static const char *arg(int argc, char **argv, int i, const char *env) {
  const char *v = i < argc ? argv[i] : getenv(env);
  if (!v || !*v) {
    fprintf(stderr, "usage: %s URL KEY SECRET (or %s in the environment)\n", argv[0], env);
    exit(2);
  }
  return v;
}

#define CHECK(call)                                                                  \
  do {                                                                               \
    tether_result r_ = (call);                                                       \
    if (r_ != TETHER_RESULT_OK) {                                                    \
      fprintf(stderr, "firmware: %s: %s\n", #call, tether_error_message(r_));        \
      goto out;                                                                      \
    }                                                                                \
  } while (0)

int main(int argc, char **argv) {
  const char *url = arg(argc, argv, 1, "TETHER_URL");
  const char *key = arg(argc, argv, 2, "TETHER_KEY");
  const char *secret = arg(argc, argv, 3, "TETHER_SECRET");
  int status = 1;
  struct server server = {.fd = -1};
  tether_config_builder *builder = NULL;
  const tether_config *config = NULL;
  tether_services *services = NULL;
  tether_agent *agent = NULL;

  fprintf(stderr, "firmware: %s (header %d.%d.%d)\n", tether_version(), TETHER_VERSION_MAJOR,
          TETHER_VERSION_MINOR, TETHER_VERSION_PATCH);
  if (server_start(&server) != 0) {
    perror("firmware: web server");
    return 1;
  }
  char target[32];
  snprintf(target, sizeof target, "127.0.0.1:%u", (unsigned)server.port);

  CHECK(tether_config_builder_new(&builder));
  CHECK(tether_config_builder_set_url(builder, url));
  CHECK(tether_config_builder_set_key(builder, key));
  CHECK(tether_config_builder_set_secret(builder, secret));
  CHECK(tether_config_builder_set_diagnostics_dir(builder, ""));
  /* The web terminal is off unless FIRMWARE_TERMINAL is set (a firmware would read its own
     setting here). */
  CHECK(tether_config_builder_set_terminal(builder, getenv("FIRMWARE_TERMINAL") != NULL));
  CHECK(tether_config_builder_set_reconnect_delay(builder, 100, 2000));
  CHECK(tether_config_builder_set_event_callback(builder, on_event, NULL));
  CHECK(tether_config_builder_set_log_callback(builder, on_log, NULL, TETHER_LOG_LEVEL_INFO));
  CHECK(tether_config_builder_add_diagnostics_provider(builder, "firmware", "Firmware",
                                                       firmware_check, &server));
  tether_config_builder *consumed = builder;
  builder = NULL; /* build consumes the builder whatever the result */
  CHECK(tether_config_builder_build(consumed, &config));
  CHECK(tether_agent_start(config, &agent));

  /* The firmware publishes its own service list (no discovery). */
  CHECK(tether_services_new(&services));
  CHECK(tether_services_add(services, "firmware-ui", target, "Firmware web UI"));
  CHECK(tether_agent_set_services(agent, services));

  char line[256];
  while (fgets(line, sizeof line, stdin)) {
    if (strncmp(line, "refresh", 7) == 0) CHECK(tether_agent_refresh_diagnostics(agent));
  }
  tether_state state = TETHER_STATE_CONNECTING;
  CHECK(tether_agent_state(agent, &state));
  fprintf(stderr, "firmware: stopping in state %u\n", (unsigned)state);
  CHECK(tether_agent_stop(agent));
  status = 0;
out:
  if (tether_agent_free(agent) != TETHER_RESULT_OK) status = 1;
  tether_services_free(services);
  tether_config_free(config);
  tether_config_builder_free(builder);
  server_stop(&server);
  fprintf(stderr, "firmware: exit %d\n", status);
  return status;
}
