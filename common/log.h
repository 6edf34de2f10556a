/*
 * log: one logfmt line per event on stderr.
 *
 *   ts=2026-11-25T22:17:01.123Z level=info msg="job done" migration=m1 host=web1 id=1-0
 *
 * Only processes log (library code in common/, queue/, cloud/ returns errors instead).
 * The level is checked before the arguments are evaluated, so a debug line costs one
 * comparison when debug is off. `msg` is a constant lowercase sentence without a full
 * stop; the rest is key=value pairs the caller formats. Values that may hold spaces or
 * quotes go through log_quote() so the line stays parseable. Every control character
 * in the finished line is escaped, so one event is always exactly one line.
 *
 * Thread-safe: each line is written with a single write(2).
 */
#ifndef XM_LOG_H
#define XM_LOG_H

enum log_level {
    LOG_DEBUG = 0,
    LOG_INFO,
    LOG_WARN,
    LOG_ERROR,
    LOG_FATAL,
};

extern enum log_level log_min_level;

/* Set the minimum level from a name ("debug", "info", "warn", "error"); -1 if unknown. */
int log_set_level(const char *name);
const char *log_level_str(enum log_level level);

void log_write(enum log_level level, const char *msg, const char *kvfmt, ...)
    __attribute__((format(printf, 3, 4)));

#define xm_log(level, msg, ...)                                                                    \
    do {                                                                                           \
        if ((level) >= log_min_level)                                                              \
            log_write((level), (msg), __VA_ARGS__);                                                \
    } while (0)

#define log_debug(msg, ...) xm_log(LOG_DEBUG, msg, __VA_ARGS__)
#define log_info(msg, ...) xm_log(LOG_INFO, msg, __VA_ARGS__)
#define log_warn(msg, ...) xm_log(LOG_WARN, msg, __VA_ARGS__)
#define log_error(msg, ...) xm_log(LOG_ERROR, msg, __VA_ARGS__)

/*
 * Quote a value for logfmt into buf: "..." with \" and \\ escaped, cut to fit.
 * Returns buf (caller storage), so it can be passed straight to a %s.
 */
const char *log_quote(char *buf, unsigned size, const char *value);

#endif
