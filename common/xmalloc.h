/*
 * xmalloc: allocation that never returns NULL, and the always-on assert.
 *
 * Out of memory is not an error any caller can handle usefully: every x* function
 * aborts the process with a message instead of returning NULL, so no other code has
 * an OOM branch. Every pointer returned is new (the caller frees it with free()).
 *
 * XM_ASSERT is checked in every build (unlike assert(), NDEBUG does not remove it):
 * it guards invariants whose violation means memory or state is already wrong.
 */
#ifndef XM_XMALLOC_H
#define XM_XMALLOC_H

#include <stddef.h>

void *xmalloc(size_t size);
void *xcalloc(size_t nmemb, size_t size);
void *xrealloc(void *ptr, size_t size);
char *xstrdup(const char *s);
char *xstrndup(const char *s, size_t n);
/* printf into a new string. */
char *xasprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Bounded copy that always NUL-terminates; returns strlen(src) like strlcpy. */
size_t xstrlcpy(char *dst, const char *src, size_t size);

_Noreturn void xm_assert_fail(const char *expr, const char *file, int line);

#define XM_ASSERT(e) ((e) ? (void)0 : xm_assert_fail(#e, __FILE__, __LINE__))

#define XM_ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

#endif
