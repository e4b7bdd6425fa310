/*
 * A device in C with Debian's libmosquitto and libmqseal_device: it logs in
 * with a login token made from its own key, follows key updates on the
 * control topics, publishes sealed readings, and reads (opens) its groups'
 * messages.
 *
 *   mqseal-c-device --device DIR --host HOST --port PORT --publish TOPIC [--subscribe FILTER]...
 *
 * Every line read from standard input is sealed for TOPIC and published at
 * QoS 1; at the end of input it waits for the broker's acknowledgements,
 * disconnects and exits. It writes one line per event to standard output:
 *
 *   ready                                    subscribed (control topics and filters), keys current
 *   published TOPIC                          the broker accepted it (MQTT 5 PUBACK success)
 *   publish-refused TOPIC reason=0xNN        the broker refused it (e.g. 0x87: not authorized)
 *   seal-failed TOPIC TOKEN                  the library refused to seal it (e.g. not-a-publisher)
 *   message TOPIC SENDER GROUP EPOCH PAYLOAD a message opened (signature, epoch, replay checked)
 *   rejected TOPIC TOKEN                     a message that could not be opened, and why
 *   plain TOPIC PAYLOAD                      a message on a topic no group protects
 *   keys-updated policy=P bundle=B           a key rotation or policy change was applied
 *   control-refused TOPIC TOKEN              a control document that did not verify
 *
 * Threads: everything runs on the main thread (mosquitto_loop calls the
 * callbacks there), so the device handle needs no lock. A program that uses
 * mosquitto_loop_start must serialise its calls on the handle itself.
 */
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <mosquitto.h>
#include <mqtt_protocol.h>

#include "mqseal.h"

struct app {
    mqseal_device *device;
    struct mosquitto *mosq;
    const char *publish_topic;
    char **filters;
    int filter_count;
    char client_id[128];
    int data_sub_mid;   /* mid of the SUBSCRIBE whose SUBACK means "ready" */
    int in_flight;      /* publishes not yet acknowledged */
    int input_done;
    int failed;
};

static void die_mqseal(const char *what, mqseal_result rc) {
    char message[512];
    mqseal_last_error_message(message, sizeof message);
    fprintf(stderr, "mqseal-c-device: %s: %s (%s)\n", what, mqseal_result_token(rc), message);
    exit(1);
}

/* Sets a fresh login token as the password: a token is accepted once, so every
 * connection attempt, reconnects included, needs its own. */
static void set_credentials(struct app *app) {
    mqseal_bytes username = {0}, token = {0};
    mqseal_result rc = mqseal_device_username(app->device, &username);
    if (rc != MQSEAL_OK) die_mqseal("username", rc);
    rc = mqseal_device_login_token(app->device, app->client_id, &token);
    if (rc != MQSEAL_OK) die_mqseal("login token", rc);
    if (mosquitto_username_pw_set(app->mosq, (const char *)username.data, (const char *)token.data) != MOSQ_ERR_SUCCESS) {
        fprintf(stderr, "mqseal-c-device: cannot set credentials\n");
        exit(1);
    }
    mqseal_bytes_free(&username);
    mqseal_bytes_free(&token);
}

static void on_connect(struct mosquitto *mosq, void *obj, int rc, int flags, const mosquitto_property *props) {
    (void)flags;
    (void)props;
    struct app *app = obj;
    if (rc != 0) {
        fprintf(stderr, "mqseal-c-device: login refused: %s\n", mosquitto_reason_string(rc));
        app->failed = 1;
        mosquitto_disconnect(mosq);
        return;
    }
    /* Control topics first: their retained policy and bundle arrive before the
     * SUBACK of the next SUBSCRIBE, so at "ready" the keys are current. */
    char *control[2];
    mqseal_bytes topics[2] = {{0}};
    size_t n = mqseal_control_topic_count();
    for (size_t i = 0; i < n && i < 2; i++) {
        mqseal_result r = mqseal_device_control_topic(app->device, i, &topics[i]);
        if (r != MQSEAL_OK) die_mqseal("control topic", r);
        control[i] = (char *)topics[i].data;
    }
    mosquitto_subscribe_multiple(mosq, NULL, (int)n, control, 1, 0, NULL);
    for (size_t i = 0; i < n && i < 2; i++) mqseal_bytes_free(&topics[i]);
    if (app->filter_count > 0) {
        mosquitto_subscribe_multiple(mosq, &app->data_sub_mid, app->filter_count, app->filters, 1, 0, NULL);
    } else {
        /* Nothing to read: the device's identity topic serves as the marker. */
        mqseal_bytes id = {0};
        mqseal_result r = mqseal_device_id(app->device, &id);
        if (r != MQSEAL_OK) die_mqseal("id", r);
        char marker[256];
        snprintf(marker, sizeof marker, "$mqseal/identity/%s", (const char *)id.data);
        mqseal_bytes_free(&id);
        mosquitto_subscribe(mosq, &app->data_sub_mid, marker, 0);
    }
}

static void on_subscribe(struct mosquitto *mosq, void *obj, int mid, int count, const int *granted, const mosquitto_property *props) {
    (void)mosq;
    (void)props;
    struct app *app = obj;
    for (int i = 0; i < count; i++) {
        if (granted[i] >= 0x80) fprintf(stderr, "mqseal-c-device: a subscription was refused (0x%02x)\n", granted[i]);
    }
    if (mid == app->data_sub_mid) printf("ready\n");
}

static void print_payload(const void *data, size_t len) {
    fwrite(data, 1, len, stdout);
}

static void on_message(struct mosquitto *mosq, void *obj, const struct mosquitto_message *msg, const mosquitto_property *props) {
    (void)mosq;
    (void)props;
    struct app *app = obj;
    mqseal_control outcome = MQSEAL_CONTROL_NOT_CONTROL;
    mqseal_result rc = mqseal_device_apply_control(app->device, msg->topic, msg->payload, (size_t)msg->payloadlen, &outcome);
    if (rc != MQSEAL_OK) {
        printf("control-refused %s %s\n", msg->topic, mqseal_result_token(rc));
        return;
    }
    if (outcome == MQSEAL_CONTROL_UPDATED) {
        printf("keys-updated policy=%" PRIu64 " bundle=%" PRIu64 "\n",
               mqseal_device_policy_version(app->device), mqseal_device_bundle_version(app->device));
        return;
    }
    if (outcome != MQSEAL_CONTROL_NOT_CONTROL) return;
    if (!mqseal_device_is_protected(app->device, msg->topic)) {
        printf("plain %s ", msg->topic);
        print_payload(msg->payload, (size_t)msg->payloadlen);
        printf("\n");
        return;
    }
    mqseal_message opened = {0};
    rc = mqseal_device_open(app->device, msg->topic, msg->payload, (size_t)msg->payloadlen, &opened);
    if (rc != MQSEAL_OK) {
        printf("rejected %s %s\n", msg->topic, mqseal_result_token(rc));
        return;
    }
    printf("message %s %s %s %" PRIu64 " ", msg->topic, (const char *)opened.sender.data, (const char *)opened.group.data, opened.epoch);
    print_payload(opened.payload.data, opened.payload.len);
    printf("\n");
    mqseal_message_free(&opened);
}

static void on_publish(struct mosquitto *mosq, void *obj, int mid, int reason, const mosquitto_property *props) {
    (void)mosq;
    (void)mid;
    (void)props;
    struct app *app = obj;
    app->in_flight--;
    if (reason >= 0x80) printf("publish-refused %s reason=0x%02x\n", app->publish_topic, reason);
    else printf("published %s\n", app->publish_topic);
}

static void publish_line(struct app *app, const char *line, size_t len) {
    mqseal_bytes envelope = {0};
    mqseal_result rc = mqseal_device_seal(app->device, app->publish_topic, (const uint8_t *)line, len, &envelope);
    if (rc != MQSEAL_OK) {
        printf("seal-failed %s %s\n", app->publish_topic, mqseal_result_token(rc));
        return;
    }
    int mid = 0;
    /* libmosquitto copies the payload, so the envelope is freed at once. */
    int mrc = mosquitto_publish_v5(app->mosq, &mid, app->publish_topic, (int)envelope.len, envelope.data, 1, false, NULL);
    mqseal_bytes_free(&envelope);
    if (mrc != MOSQ_ERR_SUCCESS) {
        fprintf(stderr, "mqseal-c-device: publish: %s\n", mosquitto_strerror(mrc));
        app->failed = 1;
        return;
    }
    app->in_flight++;
}

/* Reads the lines available on stdin without blocking the MQTT loop. */
static void read_input(struct app *app, char **buf, size_t *cap) {
    struct pollfd pfd = {.fd = STDIN_FILENO, .events = POLLIN};
    while (!app->input_done && poll(&pfd, 1, 0) > 0) {
        ssize_t n = getline(buf, cap, stdin);
        if (n < 0) {
            app->input_done = 1;
            break;
        }
        if (n > 0 && (*buf)[n - 1] == '\n') n--;
        publish_line(app, *buf, (size_t)n);
    }
}

static void usage(void) {
    fprintf(stderr, "usage: mqseal-c-device --device DIR --host HOST --port PORT --publish TOPIC [--subscribe FILTER]...\n");
    exit(2);
}

int main(int argc, char **argv) {
    struct app app = {0};
    const char *dir = NULL, *host = "127.0.0.1";
    int port = 1883;
    app.filters = calloc((size_t)argc, sizeof(char *));
    if (!app.filters) return 1;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--device")) dir = argv[i + 1];
        else if (!strcmp(argv[i], "--host")) host = argv[i + 1];
        else if (!strcmp(argv[i], "--port")) port = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--publish")) app.publish_topic = argv[i + 1];
        else if (!strcmp(argv[i], "--subscribe")) app.filters[app.filter_count++] = argv[i + 1];
        else usage();
    }
    if (!dir || !app.publish_topic || argc % 2 == 0) usage();
    setvbuf(stdout, NULL, _IOLBF, 0);

    mqseal_result rc = mqseal_device_load(dir, &app.device);
    if (rc != MQSEAL_OK) die_mqseal("load", rc);
    mqseal_bytes id = {0};
    rc = mqseal_device_id(app.device, &id);
    if (rc != MQSEAL_OK) die_mqseal("id", rc);
    snprintf(app.client_id, sizeof app.client_id, "%s-c-%ld", (const char *)id.data, (long)getpid());
    mqseal_bytes_free(&id);

    mosquitto_lib_init();
    app.mosq = mosquitto_new(app.client_id, true, &app);
    if (!app.mosq) return 1;
    mosquitto_int_option(app.mosq, MOSQ_OPT_PROTOCOL_VERSION, MQTT_PROTOCOL_V5);
    mosquitto_connect_v5_callback_set(app.mosq, on_connect);
    mosquitto_subscribe_v5_callback_set(app.mosq, on_subscribe);
    mosquitto_message_v5_callback_set(app.mosq, on_message);
    mosquitto_publish_v5_callback_set(app.mosq, on_publish);
    set_credentials(&app);
    int mrc = mosquitto_connect_bind_v5(app.mosq, host, port, 30, NULL, NULL);
    if (mrc != MOSQ_ERR_SUCCESS) {
        fprintf(stderr, "mqseal-c-device: connect: %s\n", mosquitto_strerror(mrc));
        return 1;
    }

    char *line = NULL;
    size_t cap = 0;
    int disconnecting = 0;
    while (!app.failed) {
        mrc = mosquitto_loop(app.mosq, 50, 1);
        if (mrc == MOSQ_ERR_NO_CONN && disconnecting) break;
        if (mrc != MOSQ_ERR_SUCCESS) {
            if (disconnecting) break;
            /* Lost the connection: log in again with a fresh token. */
            fprintf(stderr, "mqseal-c-device: connection lost (%s); reconnecting\n", mosquitto_strerror(mrc));
            sleep(1);
            set_credentials(&app);
            mosquitto_reconnect(app.mosq);
            continue;
        }
        read_input(&app, &line, &cap);
        if (app.input_done && app.in_flight == 0 && !disconnecting) {
            disconnecting = 1;
            mosquitto_disconnect_v5(app.mosq, 0, NULL);
        }
    }
    free(line);
    mosquitto_destroy(app.mosq);
    mosquitto_lib_cleanup();
    mqseal_device_free(app.device);
    free(app.filters);
    return app.failed ? 1 : 0;
}
