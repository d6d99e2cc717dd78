// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * detect-workload: a process whose syscalls are known exactly, for the sensor tests and
 * `./detect bench sensors`. Freestanding (no libc): every syscall it makes is one written
 * here, so a test can count them. x86-64 only, like the syscall numbers in the records.
 *
 *   detect-workload getppid N      N getppid calls, then exit 0
 *   detect-workload storm N        waits for one byte on stdin, then N getppid calls
 *   detect-workload mix N          waits for one byte on stdin, then N x (getppid, getuid,
 *                                  a failing openat, a failing close)
 *   detect-workload fork CODE      one fork (the child exits with CODE) and one thread
 *   detect-workload exit CODE      exit_group(CODE)
 */
typedef unsigned long u64;

static inline long sys0(long n)
{
	long r;
	__asm__ volatile("syscall" : "=a"(r) : "0"(n) : "rcx", "r11", "memory");
	return r;
}

static inline long sys3(long n, long a, long b, long c)
{
	long r;
	__asm__ volatile("syscall" : "=a"(r) : "0"(n), "D"(a), "S"(b), "d"(c) : "rcx", "r11", "memory");
	return r;
}

static inline long sys4(long n, long a, long b, long c, long d)
{
	long r;
	register long r10 __asm__("r10") = d;
	__asm__ volatile("syscall" : "=a"(r) : "0"(n), "D"(a), "S"(b), "d"(c), "r"(r10) : "rcx", "r11", "memory");
	return r;
}

#define SYS_read 0
#define SYS_write 1
#define SYS_close 3
#define SYS_getppid 110
#define SYS_getuid 102
#define SYS_openat 257
#define SYS_fork 57
#define SYS_clone 56
#define SYS_wait4 61
#define SYS_exit 60
#define SYS_nanosleep 35
#define SYS_exit_group 231

__attribute__((noreturn)) static void exit_group(int code)
{
	sys3(SYS_exit_group, code, 0, 0);
	__builtin_unreachable();
}

static int streq(const char *a, const char *b)
{
	while (*a && *a == *b) a++, b++;
	return *a == *b;
}

static long parse(const char *s)
{
	long v = 0;
	if (!s) return -1;
	for (; *s; s++) {
		if (*s < '0' || *s > '9') return -1;
		v = v * 10 + (*s - '0');
	}
	return v;
}

static void fail(const char *msg)
{
	long n = 0;
	while (msg[n]) n++;
	sys3(SYS_write, 2, (long)msg, n);
	exit_group(2);
}

static char thread_stack[16384] __attribute__((aligned(16)));

/* A thread (CLONE_THREAD) that exits at once: the sensors must not call it a new process. */
static long spawn_thread(void)
{
	long flags = 0x100 | 0x200 | 0x400 | 0x800 | 0x10000; /* VM FS FILES SIGHAND THREAD */
	long r;
	register long r10 __asm__("r10") = 0;
	register long r8 __asm__("r8") = 0;
	__asm__ volatile(
		"syscall\n\t"
		"test %%rax, %%rax\n\t"
		"jnz 1f\n\t"
		"mov $60, %%eax\n\t" /* child thread: exit(0), this thread only */
		"xor %%edi, %%edi\n\t"
		"syscall\n\t"
		"1:\n\t"
		: "=a"(r)
		: "0"((long)SYS_clone), "D"(flags), "S"(thread_stack + sizeof(thread_stack)), "d"(0L), "r"(r10), "r"(r8)
		: "rcx", "r11", "memory");
	return r;
}

__attribute__((used)) void workload_main(long *sp)
{
	long argc = sp[0];
	char **argv = (char **)(sp + 1);
	if (argc < 3) fail("usage: detect-workload getppid|storm|mix|fork|exit N\n");
	long n = parse(argv[2]);
	if (n < 0) fail("detect-workload: N must be a number\n");

	if (streq(argv[1], "getppid")) {
		for (long i = 0; i < n; i++) sys0(SYS_getppid);
	} else if (streq(argv[1], "storm")) {
		char go;
		if (sys3(SYS_read, 0, (long)&go, 1) != 1) fail("detect-workload: no start byte on stdin\n");
		for (long i = 0; i < n; i++) sys0(SYS_getppid);
	} else if (streq(argv[1], "mix")) {
		static const char missing[] = "/nonexistent/detect-workload";
		char go;
		if (sys3(SYS_read, 0, (long)&go, 1) != 1) fail("detect-workload: no start byte on stdin\n");
		for (long i = 0; i < n; i++) {
			sys0(SYS_getppid);
			sys0(SYS_getuid);
			sys4(SYS_openat, -100, (long)missing, 0, 0); /* fails: ENOENT */
			sys3(SYS_close, -1, 0, 0);                  /* fails: EBADF */
		}
	} else if (streq(argv[1], "fork")) {
		long child = sys0(SYS_fork);
		if (child == 0) exit_group((int)n);
		if (child < 0) fail("detect-workload: fork failed\n");
		int status = 0;
		sys4(SYS_wait4, child, (long)&status, 0, 0);
		if (spawn_thread() < 0) fail("detect-workload: clone failed\n");
		long ts[2] = { 0, 50 * 1000 * 1000 }; /* 50 ms: let the thread end first */
		sys3(SYS_nanosleep, (long)ts, 0, 0);
	} else if (streq(argv[1], "exit")) {
		exit_group((int)n);
	} else {
		fail("detect-workload: unknown mode\n");
	}
	exit_group(0);
}

__attribute__((naked, noreturn)) void _start(void)
{
	__asm__ volatile(
		"xor %rbp, %rbp\n\t"
		"mov %rsp, %rdi\n\t"
		"and $-16, %rsp\n\t"
		"call workload_main\n\t"
		"ud2\n\t");
}
