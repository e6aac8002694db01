// Goroutine snapshot collector. Compiled twice from this file (pytest_sideeye/bpfprog.py),
// both builds sharing one set of maps:
//
// * the *stop hook* (IN_CONTEXT=1): a raw tracepoint program on sched_switch. It does
//   nothing until the collector arms it for one target; then, in the context of the
//   target's own thread that completes the group stop (every thread has stopped for our
//   SIGSTOP, so no user code runs any more), it walks the goroutines with
//   bpf_probe_read_user(): the target's page tables are the live ones, so a read costs a
//   memory copy instead of pinning a page of another process (about 1 us each). It never
//   faults pages in: anything not resident is marked and redone by the iterator.
// * the *iterator* (IN_CONTEXT=0): a sleepable BPF task iterator run by the collector
//   while the target is stopped. Each read() of an iterator fd runs one "pass". It reads
//   with bpf_copy_from_user_task(), which may fault pages in and is only allowed when
//   sleepable. It reads every thread's registers, continues deep stacks, reads captured
//   variables, and takes over the goroutine walk whenever the stop hook could not do it.
//
// The target binary's runtime layout is baked in as -D macros (offsets taken from the
// binary's DWARF, never hard-coded). The iterator is loaded as BPF_PROG_TYPE_TRACING /
// BPF_TRACE_ITER with BPF_F_SLEEPABLE, the stop hook as BPF_PROG_TYPE_RAW_TRACEPOINT.
//
// Never touch a kernel struct field by name here: bcc compiles against Debian's headers
// for another kernel, so field offsets would silently be wrong. Kernel data is reached
// only through helpers, or through offsets read from the running kernel's BTF
// (TASK_PID_OFF, TASK_SIGNAL_OFF, SIGNAL_GSC_OFF, SIGNAL_FLAGS_OFF).
//
// Passes (cfg.mode):
// Modes are bits: the first pass of a snapshot is MODE_THREADS | MODE_GS (one run fewer).
//   MODE_THREADS  once per thread: its user registers, and a frame-pointer walk from them;
//                 the first thread also walks runtime.allm (thread id -> current g).
//                 A thread in the Go signal handler: also the context it interrupted.
//   MODE_GS       goroutines allgs[start .. start+count): header fields and a frame-pointer
//                 walk from g.sched (or g.syscall* when in a syscall).
//   MODE_CONT     continue walks that ran out of frames (deep stacks) or that start from a
//                 frame pointer computed by the collector (syscalls without syscallbp).
//   MODE_READ     copy a list of (address, size) ranges: variables of captured frames.
// The pre-read (engine/collect.py) walks the goroutines with MODE_GS while the target runs,
// and after each pass:
//   MODE_KEEP     keeps each record's header (as read before its walk) in `pre`, by allgs
//                 index (from cfg.pre_base): records[0 .. start) of gout are allgs[count ..).
// Then, in the pause:
//   MODE_VERIFY   compares every goroutine's header with the one kept (g, goid, status,
//                 sched.pc/sp/bp, stack bounds, waitsince, waitreason, trackingSeq); those
//                 that differ, are new, or were running or in a syscall are listed in
//                 `changed` and marked in `redo`; then MODE_GS passes with cfg.verify set
//                 walk only the goroutines marked (whole chunks of GCHUNK left unmarked
//                 cost nothing). With cfg.verify = VERIFY_NOSEQ trackingSeq is not
//                 compared: only the ABA test does that, to see it fail.
// Results go to the mmap-able array map `out`, read by the collector without a syscall.

#define MODE_THREADS 1
#define MODE_GS 2
#define MODE_CONT 4
#define MODE_READ 8
#define MODE_CAPTURE 16
#define MODE_KEEP 32     // the pre-read: keep the headers of the last MODE_GS pass's records
#define MODE_VERIFY 64   // in the pause: which goroutines differ from what was kept

// Sizes shared with pytest_sideeye/collect.py (keep in sync: it reads them from here).
#define GS_PER_PASS 16384    // goroutines per MODE_GS pass (power of two)
#define CONT_PER_PASS 256    // walks per MODE_CONT pass (power of two)
#define MAX_FRAMES 64        // frames per goroutine per pass (power of two)
#define WIN 4096             // stack window copied at once (power of two)
#define GWIN 4096            // g structs copied at once: consecutive gs share it (power of two)
#define HDR_WORDS 21         // u64 words of a goroutine record before its frames
#define MAX_THREADS 64
#define MAX_HELPERS 3       // collector threads helping the iterator walk, on other CPUs
#define STK_WORDS 64         // words of a thread's stack copied from its sp (a leaf's frame)
// The kernel's signal frame on x86-64 (struct rt_sigframe, a user-visible ABI): the
// handler's return address, then struct ucontext, whose uc_mcontext (struct sigcontext:
// r8..r15 rdi rsi rbp rbx rdx rax rcx rsp rip ...) starts 40 bytes in. Go's sigctxt reads
// the interrupted registers from there (runtime/signal_linux_amd64.go, defs_linux_amd64.go).
#define UC_MCONTEXT 40
#define MC_WORDS 17          // r8 .. rip
#define MC_R14 6
#define MC_RBP 10
#define MC_RSP 15
#define MC_RIP 16
#define SIGTRAMP_WORDS 16    // stack words sigtramp keeps below its return address at most
#define MAX_MS 256
#define READS_PER_PASS 256
#define TODO_MAX 1024       // records needing a follow-up walk, listed per MODE_GS pass
#define GCHUNK 64            // goroutines claimed at a time in a MODE_GS pass (power of two)
#define PRE_MAX 131072       // goroutines whose pre-read headers are kept (power of two)
#define VERIFY_CHECK 1
#define VERIFY_NOSEQ 2
#define PRE_VALID 0x10000    // ghdr.small: the pre-read record may stand for the goroutine
#define HIST_WORDS 512       // u64 words of runtime.sched.timeToRun read at most (power of two)

// Variable capture (capture_program.py compiles a capture plan into these tables).
#define CAPQ_MAX 32768       // frames of captured functions found by MODE_GS passes
#define CAPPY_MAX 32768      // = CAPQ_MAX: every queued frame can be listed for Python
// capq has a region per program: the stop hook queues frames in the first half, the
// iterator in the second, so each can read its own as soon as its own walk is done.
#define CAPQ_REGION 16384
#define CAPTAB_MAX 1024      // pc ranges of captured functions -> read template
#define CAPBITS_WORDS 8192   // u64 words of the captured-code bitmap (cap_shift granules)
#define CAP_OPS 16           // ops per template (power of two)
#define CAP_TEMPLATES 64     // templates (power of two)
#define CAP_STEPS 128        // reads per captured frame at most
#define CAPBUF 2097152       // bytes of capture output (2 MiB): record headers and data
#define CAP_READ_MAX 2048    // bytes per capture read (power of two)
#define CAPCHUNK 16          // captured frames claimed at a time
#define CAP_SEEN 256         // recent capture reads remembered per program (power of two)
#define TPL_PYTHON 0xffff    // a range whose frames are read by the collector's Python
// Op kinds: where the bytes of one read come from.
#define OP_END 0
#define OP_SLOT 1            // CFA + off, size bytes: the variable itself
#define OP_PTR 2             // the pointer at src+off, size bytes at it
#define OP_STR 3             // the string header at src+off: min(len, limit) bytes
#define OP_SLICE 4           // the slice header at src+off: min(len*size, limit) bytes
#define OP_EACH_STR 5        // OP_STR for each element (stride size) of src's data
#define OP_EACH_PTR 6        // OP_PTR (limit bytes) for each element of src's data
#define READ_MAX 4096        // bytes per read request (power of two)
#define READ_OUT (READS_PER_PASS * 512)

// Goroutine record flags (word H_FLAGS).
#define F_MORE 1             // the frame chain goes on: continue from H_CONT_FP
#define F_BADFP 2            // a frame pointer left the stack or went backwards
#define F_READFAIL 4         // a copy from the target failed
#define F_NOG 8              // the g pointer itself could not be read
#define F_INCAP 16           // some frame's pc lies within the capture bounds (cap_lo..cap_hi)
#define SIGNAL_STOP_STOPPED 1   // signal_struct.flags: the group stop is complete
// Slots of dead goroutines keep H_STATUS = GSTATUS_DEAD and no frames.

// Goroutine record words.
#define H_GP 0
#define H_GOID 1
#define H_STATUS 2
#define H_WAITREASON 3
#define H_WAITSINCE 4
#define H_GOPC 5
#define H_PARENT 6
#define H_M 7
#define H_LO 8
#define H_HI 9
#define H_SP 10
#define H_PC 11
#define H_BP 12
#define H_SYSSP 13
#define H_SYSPC 14
#define H_SYSBP 15
#define H_NFRAMES 16
#define H_FLAGS 17
#define H_CONT_FP 18
#define H_INDEX 19
#define H_LABELS 20         // g.labels (pprof labels: engine/labels.py reads the set)

struct bpf_iter_meta { void *seq; u64 session_id; u64 seq_num; };

// Open-coded iterator kfuncs (kernel >= 6.4): the verifier checks a loop body until its
// states converge instead of unrolling it, which is what lets one pass walk hundreds of
// goroutines x dozens of frames. bcc 0.26 cannot emit kfunc calls, so these placeholders
// compile to `call KF_*` and pytest_sideeye/bpfprog.py patches them into kfunc calls.
struct bpf_iter_num { u64 opaque; } __attribute__((aligned(8)));
#define KF_ITER_NEW 0x7ff0001
#define KF_ITER_NEXT 0x7ff0002
#define KF_ITER_DESTROY 0x7ff0003
static int (*iter_new)(struct bpf_iter_num *it, int start, int end) = (void *)KF_ITER_NEW;
static int *(*iter_next)(struct bpf_iter_num *it) = (void *)KF_ITER_NEXT;
static void (*iter_destroy)(struct bpf_iter_num *it) = (void *)KF_ITER_DESTROY;
struct bpf_iter__task { struct bpf_iter_meta *meta; struct task_struct *task; };

// Reading the target: in its own context, through its live page tables (never faults);
// from the iterator, through the task (may fault pages in, so sleepable only).
#if IN_CONTEXT
#define COPY_USER(dst, size, src, task) bpf_probe_read_user(dst, size, src)
#else
#define COPY_USER(dst, size, src, task) bpf_copy_from_user_task(dst, size, src, task, 0)
#endif

struct config {
  u32 mode;
  u32 start;        // MODE_GS: first allgs index; MODE_CONT/READ: number of entries
  u32 count;        // MODE_GS: how many goroutines
  u32 pad;
  u64 allgs_addr;   // address of the runtime.allgs slice header
  u64 allglen_addr; // address of runtime.allglen
  u64 allm_addr;    // address of runtime.allm
  u64 bias;         // load bias (PIE)
  // The stop hook: armed for one process; it walks allgs[0 .. hook_count) once.
  u32 hook_tgid;
  u32 hook_count;
  u64 hook_state;   // HOOK_* below: the collector arms, the hook claims and finishes
  u64 cursor;       // MODE_GS: goroutines of the pass claimed so far (pass_goroutines)
  u64 hook_budget_ns;  // the hook claims no more goroutines after walking this long
  // Capture: runtime pc bounds of every captured range (cap_hi 0: capture off), the number
  // of ranges in captab, and the claim cursor over capq.
  u64 cap_lo;
  u64 cap_hi;
  u64 cap_nranges;
  u64 cap_cursor;
  u64 cap_deadline;    // CLOCK_MONOTONIC ns when capture stops: set by whoever starts first
  u64 cap_budget_ns;   // how long capture may take, from its start
  u64 cap_bytes;       // capbuf bytes this snapshot may use (the process's byte budget)
  u64 cap_gen;         // this snapshot's number: older remembered reads are stale
  u64 cap_cursor1;     // claim cursor of capq's second region (cap_cursor: the first)
  // Thread ids of the collector's helper threads: a helper running an iterator pass takes
  // scratch entry 2 + its index and joins only the shared work (goroutines and capture
  // claimed by atomics); the threads, continuation and read passes are the main thread's.
  u32 helper_tid[MAX_HELPERS];
  u32 cap_shift;       // capbits: bit i covers code [cap_lo + i << cap_shift, + 1 << cap_shift)
  // The Go signal handler's entry (runtime.sigtramp) and the return address the kernel
  // pushes for it (runtime.sigreturn__sigaction), as runtime code ranges [lo, hi): how
  // MODE_THREADS finds the signal frame of a thread caught in the handler (0: never).
  u64 sigtramp_lo, sigtramp_hi, sigret_lo, sigret_hi;
  u32 verify;          // VERIFY_*: MODE_VERIFY's comparison; MODE_GS walks only `redo`
  u32 pre_count;       // allgs[0 .. pre_count) have headers kept in `pre` (MODE_KEEP)
  // runtime.sched.timeToRun (a histogram of u64 counts): MODE_VERIFY sums it, a count of
  // the tracked transitions to running, which bounds how far trackingSeq may have wrapped.
  u64 hist_addr;
  u64 hist_words;
  // Where this process's kept headers start in `pre`: processes of one program pre-read
  // before one stop (together mode) each keep theirs in slots of their own,
  // pre[pre_base .. pre_base + pre_count).
  u32 pre_base;
  u32 pad2;
};

// A goroutine's header as the pre-read read it before walking its stack: what MODE_VERIFY
// compares. small: waitreason | trackingSeq << 8 | PRE_VALID.
struct ghdr {
  u64 gp, goid, sp, pc, bp, lo, hi, waitsince;
  u32 status, small;
};

struct capent { u32 gidx, frame; u64 pc, cfa; };       // a frame to capture
struct caprange { u64 lo, hi; u32 tpl, pad; };         // runtime pcs [lo, hi) -> template
struct capop { u8 kind, src; u16 count; s32 off; u32 size, limit; };
struct capbuf_t { u8 d[CAPBUF + CAP_READ_MAX + 64]; };

#define HOOK_ARMED 1
#define HOOK_RUNNING 2
#define HOOK_DONE 3

// Frames are (pc, frame pointer) pairs, the pointer giving CFA = fp + 16 (variables),
// kept next to each other and to the header: a typical goroutine's record is a few
// consecutive cache lines, which is most of what writing it costs.
struct grec {
  u64 h[HDR_WORDS];
  u64 f[2 * MAX_FRAMES];
};

struct trec {
  u64 tid, ip, sp, bp, r14, nframes, flags, uc;   // uc: th.sig's, its ucontext's address
  u64 f[2 * MAX_FRAMES];
  // The top of the stack: a frameless leaf (no frame pointer pushed) keeps its return
  // address at sp + its frame size, which the frame-pointer walk skips; decode.py finds it
  // here with the function's SP delta, as the runtime's own unwinder does.
  u64 stk[STK_WORDS];
};

struct mrec { u64 m, procid, curg, pad; };

struct cont { u64 slot, fp, lo, hi; };
struct readreq { u64 addr; u32 size; u32 out_off; };

struct out_t {
  u64 allglen;          // as read in this pass
  u64 allgs;            // data pointer of allgs
  u64 nrecs;            // MODE_GS/CONT/READ: records written
  u64 nms;              // MODE_THREADS: Ms read from runtime.allm
  u64 errors;
  u64 ntodo;            // MODE_GS: records listed in `todo` (may exceed TODO_MAX)
  u64 nthreads;         // MODE_THREADS: threads seen
  u64 gfails;           // MODE_GS: records whose g or stack could not be read
  u64 hook_ns;          // how long the stop hook's walk took
  u64 gerrors;          // MODE_GS: chunks of allgs that could not be read
  u64 hook_gs;          // goroutines the stop hook walked (the iterator the rest)
  u64 ncapq;            // frames appended to capq (may exceed CAPQ_MAX)
  u64 capused;          // bytes of capbuf used
  u64 capfull;          // capture reads dropped: capbuf full
  u64 ncappy;           // capq entries listed in cappy (at most CAPPY_MAX)
  u64 ncapq1;           // frames in capq's second region (ncapq: the first)
  u64 hook_walked;      // set once the stop hook's walk (so its capq region) is complete
  u64 capfail;          // capture reads that failed (not resident, or a bad pointer)
  u64 helper_gs;        // goroutines the collector's helper threads walked
  u64 nsigs;            // MODE_THREADS: threads caught in a signal handler (th.sig)
  u64 nchanged;         // MODE_VERIFY: goroutines listed in `changed` (may exceed PRE_MAX)
  u64 hist_sum;         // MODE_VERIFY: the sum of timeToRun's words (~0: unreadable)
  union {
    struct grec cg[CONT_PER_PASS];   // MODE_CONT results
    // th.sig[i]: the context a thread caught in the Go signal handler interrupted (as read
    // from the kernel's signal frame), walked like a thread's: tid, ip, sp, bp, r14, ...
    struct { struct trec t[MAX_THREADS]; struct mrec m[MAX_MS]; struct trec sig[MAX_THREADS]; } th;
    struct { s32 rc[READS_PER_PASS]; u8 data[READ_OUT + READ_MAX]; } rd;
  };
};

struct scratch_t {
  u64 ptrs[GCHUNK];
  u32 opres[2 * CAP_OPS];   // per op of the frame being captured: data offset, length
  u32 cap_k, cap_e;         // capture_frame's op and element (loop state kept in memory)
  // Recent capture reads, direct-mapped by address: seen_addr, and cap_gen << 34 | data
  // offset << 12 | size. Frames share a lot (a time.Time's Location, interned strings, a
  // parent object): each is read once, the collector decodes every frame from all of it.
  u64 seen_addr[CAP_SEEN];
  u64 seen_val[CAP_SEEN];
  u8 g[G_COPY + 8];
  u8 gwin[GWIN + G_COPY + 8];
  u8 win[WIN + 16];
  u8 m[M_COPY + 8];
  u64 regs[24];
  // The capture bounds as walk() checks them: pc - cap_lo <= cap_span (span 0: no capture).
  u64 cap_lo, cap_span;
};

BPF_F_TABLE("array", u32, struct config, cfg, 1, BPF_F_MMAPABLE);
BPF_F_TABLE("array", u32, struct out_t, out, 1, BPF_F_MMAPABLE);
// One record per goroutine of a MODE_GS pass, in its own map: the collector decodes them
// straight from the mapping after the resume, so a pass costs no copy during the pause.
BPF_F_TABLE("array", u32, struct grec, gout, GS_PER_PASS, BPF_F_MMAPABLE);
BPF_F_TABLE("array", u32, struct cont, conts, CONT_PER_PASS, BPF_F_MMAPABLE);
// Indexes of the records of a MODE_GS pass that need a follow-up walk (deeper stacks,
// syscalls without syscallbp), so the collector never scans all records in the pause.
BPF_F_TABLE("array", u32, u64, todo, TODO_MAX, BPF_F_MMAPABLE);
// The pre-read's headers by allgs index; in the pause, the goroutines to walk again: their
// indexes in `changed`, and a bit each in `redo` (a word per GCHUNK goroutines).
BPF_F_TABLE("array", u32, struct ghdr, pre, PRE_MAX, BPF_F_MMAPABLE);
BPF_F_TABLE("array", u32, u32, changed, PRE_MAX, BPF_F_MMAPABLE);
BPF_F_TABLE("array", u32, u64, redo, PRE_MAX / 64, BPF_F_MMAPABLE);
BPF_F_TABLE("array", u32, struct readreq, reads, READS_PER_PASS, BPF_F_MMAPABLE);
BPF_F_TABLE("array", u32, struct capent, capq, CAPQ_MAX, BPF_F_MMAPABLE);
BPF_F_TABLE("array", u32, struct caprange, captab, CAPTAB_MAX, BPF_F_MMAPABLE);
// Which granules of code between cap_lo and cap_hi hold captured ranges: the walk queues
// a frame only when its bit is set (one load per frame; bounds alone let a whole package's
// frames through, e.g. every main.* frame when one main function is captured).
struct capbits_t { u64 w[CAPBITS_WORDS]; };
BPF_F_TABLE("array", u32, struct capbits_t, capbits, 1, BPF_F_MMAPABLE);
BPF_F_TABLE("array", u32, struct capop, capops, CAP_TEMPLATES * CAP_OPS, BPF_F_MMAPABLE);
BPF_F_TABLE("array", u32, struct capbuf_t, capbuf, 1, BPF_F_MMAPABLE);
// capq entries whose ranges the collector's Python reads (TPL_PYTHON).
BPF_F_TABLE("array", u32, u64, cappy, CAPPY_MAX, BPF_F_MMAPABLE);
// Scratch space: entry 0 for the stop hook, 1 for the iterator run by the collector's main
// thread, 2.. for the iterators its helper threads run at the same time.
BPF_ARRAY(scratch, struct scratch_t, 2 + MAX_HELPERS);

static __always_inline u64 g_word(u8 *g, u32 off) {
  return *(u64 *)(g + (off & (G_COPY - 1)));
}

// The g at gp, from the window of gs copied last when it holds it whole, else from a new
// window copied at gp (falling back to a single g when that copy fails, e.g. at the end of
// a mapping). Goroutines created together sit next to each other in the heap: one copy of
// GWIN bytes serves several of them. Returns NULL when gp cannot be read.
static __always_inline u8 *read_g(struct task_struct *task, struct scratch_t *s, u64 gp,
                                  u64 *gbase) {
  u64 off = gp - *gbase;
  if (*gbase && gp >= *gbase && off <= GWIN - G_COPY)
    return s->gwin + (off & (GWIN - 1));
  if (COPY_USER(s->gwin, GWIN, (void *)gp, task) == 0) {
    *gbase = gp;
    return s->gwin;
  }
  *gbase = 0;
  if (COPY_USER(s->g, G_COPY, (void *)gp, task) == 0)
    return s->g;
  return 0;
}

// Walk a frame-pointer chain from fp inside [lo, hi): frame k = ([fp+8], [fp]), reading
// the stack through a window copied WIN bytes at a time; frames go to indexes first.. and
// their count to *nframes. Loop-carried values are kept out of the verifier's sight (the
// iterator's value is the index, the count lives in map memory) so that its states
// converge after a few iterations.
static __always_inline void walk(struct task_struct *task, struct scratch_t *s, u64 *frames,
                                 u64 *nframes, u32 first, u64 fp, u64 lo, u64 hi,
                                 u64 *flags, u64 *cont) {
  u64 base = 0, have = 0;
  u64 fl = F_MORE;  // stays set only when the loop runs out of frames
  u64 clo = s->cap_lo, cspan = s->cap_span, incap = 0;
  struct bpf_iter_num it;
  int *kp;
  // Keep these as pointers in registers: if clang hoists them as "base + scalar offset",
  // the verifier widens the spilled offset while checking the loop and rejects its use.
  asm volatile("" : "+r"(frames), "+r"(nframes));
  *nframes = first;
  iter_new(&it, first, MAX_FRAMES);
  while ((kp = iter_next(&it))) {
    u32 k = *kp;
    if (fp == 0) {
      fl = 0;
      break;
    }
    if ((fp & 7) || fp < lo || fp + 16 > hi) {
      fl = F_BADFP;
      break;
    }
    if (fp < base || fp + 16 > base + have) {
      u64 sz = hi - fp;
      if (sz > WIN)
        sz = WIN;
      if (sz < 16) {
        fl = F_BADFP;
        break;
      }
      if (COPY_USER(s->win, sz, (void *)fp, task) != 0) {
        fl = F_READFAIL;
        break;
      }
      base = fp;
      have = sz;
    }
    u64 off = (fp - base) & (WIN - 1);
    u64 next = *(u64 *)(s->win + off);
    u64 ret = *(u64 *)(s->win + off + 8);
    if (ret == 0) {
      fl = 0;
      break;
    }
    frames[(2 * k) & (2 * MAX_FRAMES - 2)] = ret;
    frames[(2 * k + 1) & (2 * MAX_FRAMES - 1)] = next;
    incap |= ret - clo <= cspan;
    *nframes = k + 1;
    if (next != 0 && next <= fp) {
      fl = F_BADFP;
      break;
    }
    fp = next;
  }
  iter_destroy(&it);
  if (fl == F_MORE) {
    if (fp == 0)
      fl = 0;
    else
      *cont = fp;
  }
  *flags |= fl | (incap ? F_INCAP : 0);
}

// Frames whose pc lies within the captured functions' bounds go to capq, for pass_capture
// to match against captab and read.
static __always_inline void queue_captured(struct config *c, struct out_t *o, struct grec *r,
                                           u32 gidx) {
  u64 n = r->h[H_NFRAMES];
  u64 lo = c->cap_lo, hi = c->cap_hi;
#if !IN_CONTEXT
  u32 zero = 0;
  struct capbits_t *bits = capbits.lookup(&zero);
  if (!bits)
    return;
#endif
  struct bpf_iter_num it;
  int *kp;
  iter_new(&it, 0, MAX_FRAMES);
  while ((kp = iter_next(&it))) {
    u32 k = *kp;
    if (k >= n)
      break;
    u64 pc = r->f[(2 * k) & (2 * MAX_FRAMES - 2)];
    u64 fp = r->f[(2 * k + 1) & (2 * MAX_FRAMES - 1)];
    if (pc <= lo || pc > hi || !fp)
      continue;
#if !IN_CONTEXT
    // The stop hook skips this: it walks ~1,000 goroutines in its budget, whose frames fit
    // its region of capq, and this check took its program past the verifier's limit.
    u64 bit = (pc - 1 - lo) >> (c->cap_shift & 63);   // a return address: the call is before it
    if (!((bits->w[(bit >> 6) & (CAPBITS_WORDS - 1)] >> (bit & 63)) & 1) ||
        bit >= CAPBITS_WORDS * 64)
      continue;
#endif
    u32 q = __sync_fetch_and_add(IN_CONTEXT ? &o->ncapq : &o->ncapq1, 1);
    if (q >= CAPQ_REGION)
      continue;
    q += IN_CONTEXT ? 0 : CAPQ_REGION;
    struct capent *e = capq.lookup(&q);
    if (!e)
      continue;
    e->gidx = gidx;
    e->frame = k;
    e->pc = pc;
    e->cfa = fp + 16;
  }
  iter_destroy(&it);
}

#ifdef OFF_TRACKSEQ
#define G_TRACKSEQ(g) (*(u8 *)((g) + (OFF_TRACKSEQ & (G_COPY - 1))))
#else
#define G_TRACKSEQ(g) 0   // not in this layout: the collector does no pre-read
#endif

// waitreason | trackingSeq << 8: a record's H_WAITREASON word (decode.py masks it).
static __always_inline u64 g_small(u8 *g) {
  return *(u8 *)(g + (OFF_WAITREASON & (G_COPY - 1))) | (u64)G_TRACKSEQ(g) << 8;
}

// One goroutine into record i of gout: header fields from its g, then its frames.
static __always_inline void read_goroutine(struct task_struct *task, struct config *c,
                                           struct out_t *o,
                                           struct scratch_t *s, u32 i, u64 gp, u64 index,
                                           u64 *gbase) {
  struct grec *r = gout.lookup(&i);
  if (!r)
    return;
  r->h[H_GP] = gp;
  r->h[H_INDEX] = index;
  r->h[H_NFRAMES] = 0;
  r->h[H_FLAGS] = 0;
  r->h[H_CONT_FP] = 0;
  r->h[H_STATUS] = GSTATUS_DEAD;
  u8 *g = gp ? read_g(task, s, gp, gbase) : 0;
  if (!g) {
    r->h[H_FLAGS] = F_NOG;
    __sync_fetch_and_add(&o->gfails, 1);
    return;
  }
  u32 status = *(u32 *)(g + (OFF_STATUS & (G_COPY - 1))) & ~0x1000u;
  if (status == GSTATUS_DEAD)
    return;
  r->h[H_GOID] = g_word(g, OFF_GOID);
  r->h[H_STATUS] = status;
  r->h[H_WAITREASON] = g_small(g);
  r->h[H_WAITSINCE] = g_word(g, OFF_WAITSINCE);
  r->h[H_GOPC] = g_word(g, OFF_GOPC);
#ifdef OFF_PARENT
  r->h[H_PARENT] = g_word(g, OFF_PARENT);
#else
  r->h[H_PARENT] = 0;
#endif
  r->h[H_M] = g_word(g, OFF_M);
  // The g is in hand: its pprof label set's pointer costs one store here, against a read
  // of every goroutine's g again from user space (engine/labels.py: only non-nil ones).
#ifdef OFF_LABELS
  r->h[H_LABELS] = g_word(g, OFF_LABELS);
#else
  r->h[H_LABELS] = 0;
#endif
  u64 lo = g_word(g, OFF_STACK_LO), hi = g_word(g, OFF_STACK_HI);
  r->h[H_LO] = lo;
  r->h[H_HI] = hi;
  r->h[H_SP] = g_word(g, OFF_SCHED_SP);
  r->h[H_PC] = g_word(g, OFF_SCHED_PC);
  r->h[H_BP] = g_word(g, OFF_SCHED_BP);
  r->h[H_SYSSP] = g_word(g, OFF_SYSCALLSP);
  r->h[H_SYSPC] = g_word(g, OFF_SYSCALLPC);
#ifdef OFF_SYSCALLBP
  r->h[H_SYSBP] = g_word(g, OFF_SYSCALLBP);
#else
  r->h[H_SYSBP] = 0;
#endif
  // A running goroutine's sched is stale while it runs its own code (the threads pass
  // unwinds it from registers) but right while it is on the system stack (systemstack,
  // mcall and asyncPreempt save it): walk it too, the collector picks.
  // A goroutine in a syscall starts at syscallpc; without syscallbp (Go < 1.23) the
  // collector computes the frame pointer from pclntab and continues in MODE_CONT.
  u64 pc = r->h[H_PC], fp = r->h[H_BP];
  if (status == GSTATUS_SYSCALL) {
    pc = r->h[H_SYSPC];
    fp = r->h[H_SYSBP];
  }
  r->f[0] = pc;
  r->f[1] = fp;
  r->h[H_NFRAMES] = 1;
  if (pc - s->cap_lo <= s->cap_span)
    r->h[H_FLAGS] = F_INCAP;
  if (fp != 0)
    walk(task, s, r->f, &r->h[H_NFRAMES], 1, fp, lo, hi, &r->h[H_FLAGS], &r->h[H_CONT_FP]);
  if (r->h[H_FLAGS] & F_READFAIL)
    __sync_fetch_and_add(&o->gfails, 1);
  if ((r->h[H_FLAGS] & F_MORE) || (status == GSTATUS_SYSCALL && fp == 0)) {
    u32 k = __sync_fetch_and_add(&o->ntodo, 1);
    u64 *slot = todo.lookup(&k);
    if (slot)
      *slot = i;
  }
  // Most goroutines have no frame within the bounds: the walk said so (F_INCAP), which
  // spares a second loop over their frames (a fifth of the stop hook's time per goroutine).
  if (c->cap_hi && (r->h[H_FLAGS] & F_INCAP))
    queue_captured(c, o, r, index);
}

// The next chunk of a pass over `count` goroutines (the goroutine and verify passes share
// it), claimed from cfg.cursor by whichever thread gets there first (the stop hook, the
// iterator, its helpers): its first index in *first, and its size (0: none left).
static __always_inline u32 claim_gchunk(struct config *c, u64 count, u64 *first) {
  u64 f = __sync_fetch_and_add(&c->cursor, GCHUNK);
  *first = f;
  if (f >= count)
    return 0;
  return count - f > GCHUNK ? GCHUNK : count - f;
}

// The g pointers of a claimed chunk, allgs[from .. from + n) at `addr`, into s->ptrs: 0,
// or -1 when unreadable (counted in gerrors) or of a size the verifier cannot bound.
static __always_inline int read_gptrs(struct task_struct *task, struct out_t *o,
                                      struct scratch_t *s, u64 addr, u32 n) {
  // Clamped where the verifier sees it (clang would drop a clamp it can prove redundant).
  u64 bytes = n * 8;
  asm volatile("" : "+r"(bytes));
  bytes &= GCHUNK * 8 * 2 - 1;
  if (bytes > GCHUNK * 8 || bytes == 0)
    return -1;
  if (COPY_USER(s->ptrs, bytes, (void *)addr, task)) {
    __sync_fetch_and_add(&o->gerrors, 1);
    return -1;
  }
  return 0;
}

// Goroutines allgs[start .. start+count) into gout[0 .. count), GCHUNK at a time, each
// chunk claimed from cfg.cursor: the stop hook and the iterator can share one pass, each
// on its own CPU, and whichever is faster takes more. The collector zeroes the cursor and
// the counters (ntodo, gfails, gerrors) before a pass. Returns how many this caller walked.
static __always_inline int pass_goroutines(struct task_struct *task, struct config *c,
                                           struct out_t *o, struct scratch_t *s, u32 start,
                                           u32 count, u64 deadline) {
  u64 allglen = 0, allgs = 0;
  COPY_USER(&allglen, 8, (void *)c->allglen_addr, task);
  COPY_USER(&allgs, 8, (void *)c->allgs_addr, task);
  o->allglen = allglen;
  o->allgs = allgs;
  if (count > GS_PER_PASS)
    count = GS_PER_PASS;
  if (start >= allglen)
    return 0;
  if (start + count > allglen)
    count = allglen - start;
  o->nrecs = count;
  s->cap_lo = c->cap_lo;
  s->cap_span = c->cap_hi ? c->cap_hi - c->cap_lo : 0;
  u32 walked = 0;
  struct bpf_iter_num chunks;
  int *cp;
  iter_new(&chunks, 0, GS_PER_PASS / GCHUNK);
  while ((cp = iter_next(&chunks))) {
    if (deadline && bpf_ktime_get_ns() > deadline)
      break;
    u64 first;
    u32 n = claim_gchunk(c, count, &first);
    if (!n)
      break;
    u64 only = ~0ull;   // which goroutines of the chunk to walk
    if (c->verify) {
      u32 w = (start + first) / GCHUNK;
      u64 *bits = redo.lookup(&w);
      only = bits ? *bits : ~0ull;
      if (!only)
        continue;
    }
    asm volatile("" : "+r"(only));
    if (read_gptrs(task, o, s, allgs + (start + first) * 8, n))
      break;
    walked += n;
    u64 gbase = 0;   // start of the g window in s->gwin (0: none)
    struct bpf_iter_num it;
    int *jp;
    iter_new(&it, 0, GCHUNK);
    while ((jp = iter_next(&it))) {
      u32 j = *jp;
      if (j >= n)
        break;
      if (!((only >> (j & 63)) & 1))
        continue;
      read_goroutine(task, c, o, s, first + j, s->ptrs[j & (GCHUNK - 1)], start + first + j,
                     &gbase);
    }
    iter_destroy(&it);
  }
  iter_destroy(&chunks);
  return walked;
}

// --- variable capture ----------------------------------------------------------------

// The template of the captured range holding pc (captab is sorted), or TPL_NONE.
#define TPL_NONE 0xffffffff
static __always_inline u32 find_template(struct config *c, u64 pc) {
  u32 lo = 0, hi = c->cap_nranges;
  if (hi > CAPTAB_MAX)
    hi = CAPTAB_MAX;
  u32 found = TPL_NONE;
  struct bpf_iter_num it;
  int *ip;
  iter_new(&it, 0, 12);   // log2(CAPTAB_MAX) + 2 halvings
  while ((ip = iter_next(&it))) {
    if (lo >= hi)
      break;
    u32 mid = (lo + hi) / 2;
    struct caprange *r = captab.lookup(&mid);
    if (!r)
      break;
    if (pc < r->lo) {
      hi = mid;
    } else if (pc >= r->hi) {
      lo = mid + 1;
    } else {
      found = r->tpl;
      break;
    }
  }
  iter_destroy(&it);
  return found;
}

static __always_inline u64 cap_word(struct capbuf_t *b, u64 pos) {
  return *(u64 *)(b->d + (pos & (CAPBUF - 1)));
}

// One read into capbuf: a 16-byte header (address; frame entry << 32 | size, bit 31 set
// when the read failed) then the data. Returns (data offset << 32 | size), 0 on failure.
static __always_inline u64 cap_read(struct task_struct *task, struct config *c,
                                    struct out_t *o, struct scratch_t *s, struct capbuf_t *b,
                                    u32 entry, u64 addr, u64 size) {
  if (addr < 4096 || size == 0)
    return 0;
  if (size > CAP_READ_MAX)
    size = CAP_READ_MAX;
  u64 gen = c->cap_gen;
  u32 slot = ((addr >> 3) ^ (addr >> 11)) & (CAP_SEEN - 1);
  u64 v = s->seen_val[slot];
  if (s->seen_addr[slot] == addr && v >> 34 == gen && (v & 0xfff) >= size)
    return ((v >> 12) & 0x3fffff) << 32 | size;
  u64 need = 16 + ((size + 7) & ~7ull);
  u64 pos = __sync_fetch_and_add(&o->capused, need);
  if (pos + need > CAPBUF || pos + need > c->cap_bytes) {
    __sync_fetch_and_add(&o->capfull, 1);
    return 0;
  }
  u64 *hdr = (u64 *)(b->d + (pos & (CAPBUF - 1)));
  hdr[0] = addr;
  u64 sz = size;
  asm volatile("" : "+r"(sz));
  sz = ((sz - 1) & (CAP_READ_MAX - 1)) + 1;
  long rc = COPY_USER(b->d + ((pos + 16) & (CAPBUF - 1)), sz, (void *)addr, task);
  hdr[1] = ((u64)entry << 32) | sz | (rc ? 0x80000000ull : 0);
  if (rc) {
    // Often only not resident (the stop hook never faults pages in): the collector reads
    // these frames again through the iterator, which may, before the resume.
    __sync_fetch_and_add(&o->capfail, 1);
    return 0;
  }
  s->seen_addr[slot] = addr;
  s->seen_val[slot] = gen << 34 | ((pos + 16) & 0x3fffff) << 12 | sz;
  return ((pos + 16) << 32) | sz;
}

// Run template tpl for the frame at cfa: each op reads from the frame or from the data of
// an earlier op (s->opres), EACH ops once per element. One flat loop over reads keeps the
// verifier's work small.
static __always_inline void capture_frame(struct task_struct *task, struct config *c,
                                          struct out_t *o,
                                          struct scratch_t *s, struct capbuf_t *b, u32 entry,
                                          u64 cfa, u32 tpl) {
  __builtin_memset(s->opres, 0, sizeof(s->opres));
  // The op and element indexes live in map memory, not in registers: values the verifier
  // cannot follow let its states converge instead of unrolling every read of a template.
  s->cap_k = 0;
  s->cap_e = 0;
  struct bpf_iter_num it;
  int *ip;
  iter_new(&it, 0, CAP_STEPS);
  while ((ip = iter_next(&it))) {
    u32 k = s->cap_k, e = s->cap_e;
    if (k >= CAP_OPS)
      break;
    u32 key = (tpl & (CAP_TEMPLATES - 1)) * CAP_OPS + k;
    struct capop *op = capops.lookup(&key);
    if (!op || op->kind == OP_END)
      break;
    u32 kind = op->kind;
    int each = kind == OP_EACH_STR || kind == OP_EACH_PTR;
    u64 res = 0;
    if (kind == OP_SLOT) {
      res = cap_read(task, c, o, s, b, entry, cfa + (s64)op->off, op->size);
    } else {
      u32 si = op->src & (CAP_OPS - 1);
      u64 spos = s->opres[2 * si], slen = s->opres[2 * si + 1];
      u64 off = (u32)op->off;
      if (each) {
        u64 stride = op->size, n = 0;
        if (stride && slen > off)
          n = (slen - off) / stride;
        if (n > op->count)
          n = op->count;
        if (e >= n) {
          s->cap_k = k + 1;
          s->cap_e = 0;
          continue;
        }
        off += e * stride;
        s->cap_e = e + 1;
      }
      int strlike = kind == OP_STR || kind == OP_SLICE || kind == OP_EACH_STR;
      if (slen && off + (strlike ? 16 : 8) <= slen) {
        u64 p = cap_word(b, spos + off);
        u64 size = 0;
        if (kind == OP_PTR)
          size = op->size;
        else if (kind == OP_EACH_PTR)
          size = op->limit;
        else {
          s64 n = (s64)cap_word(b, spos + off + 8);
          if (n > 0) {
            if (kind == OP_SLICE)
              size = ((u64)n < op->count ? (u64)n : op->count) * op->size;
            else
              size = (u64)n < op->limit ? (u64)n : op->limit;
          }
        }
        res = cap_read(task, c, o, s, b, entry, p, size);
      }
    }
    if (each)
      continue;
    s->opres[(2 * k) & (2 * CAP_OPS - 2)] = res >> 32;
    s->opres[(2 * k + 1) & (2 * CAP_OPS - 1)] = (u32)res;
    s->cap_k = k + 1;
  }
  iter_destroy(&it);
}

// When capture stops: the budget counts from when the first program started capturing.
static __always_inline u64 capture_deadline(struct config *c) {
  u64 d = c->cap_deadline;
  if (!d) {
    u64 want = bpf_ktime_get_ns() + c->cap_budget_ns;
    u64 old = __sync_val_compare_and_swap(&c->cap_deadline, 0, want);
    d = old ? old : want;
  }
  return d;
}

// Captured frames of one capq region, CAPCHUNK at a time claimed from its cursor (the
// stop hook and the iterator can share a region as they share a goroutine pass). Frames
// of ranges the collector's Python reads (TPL_PYTHON) are listed for it in cappy.
static __always_inline void pass_capture(struct task_struct *task, struct config *c,
                                         struct out_t *o, struct scratch_t *s, u64 deadline,
                                         int region) {
  u32 zero = 0;
  struct capbuf_t *b = capbuf.lookup(&zero);
  if (!b)
    return;
  u64 total = region ? o->ncapq1 : o->ncapq;
  u64 *cursor = region ? &c->cap_cursor1 : &c->cap_cursor;
  u32 base = region ? CAPQ_REGION : 0;
  if (total > CAPQ_REGION)
    total = CAPQ_REGION;
  struct bpf_iter_num chunks;
  int *cp;
  iter_new(&chunks, 0, CAPQ_REGION / CAPCHUNK);
  while ((cp = iter_next(&chunks))) {
    if (deadline && bpf_ktime_get_ns() > deadline)
      break;
    u64 first = __sync_fetch_and_add(cursor, CAPCHUNK);
    if (first >= total)
      break;
    struct bpf_iter_num it;
    int *jp;
    iter_new(&it, 0, CAPCHUNK);
    while ((jp = iter_next(&it))) {
      u32 q = first + *jp;
      if (q >= total)
        break;
      q += base;
      struct capent *e = capq.lookup(&q);
      if (!e)
        break;
      u32 tpl = find_template(c, e->pc - 1);   // a return address: the call is before it
      if (tpl == TPL_PYTHON) {
        u32 k = __sync_fetch_and_add(&o->ncappy, 1);
        u64 *slot = cappy.lookup(&k);
        if (slot)
          *slot = q;
      }
      if (tpl == TPL_NONE || tpl == TPL_PYTHON)
        continue;
      capture_frame(task, c, o, s, b, q, e->cfa, tpl);
    }
    iter_destroy(&it);
  }
  iter_destroy(&chunks);
}

#if !IN_CONTEXT
// MODE_KEEP: the headers of gout[0 .. count) (a MODE_GS pass's records of allgs[start ..)),
// as read before each walk; valid when the walk went well and the goroutine was neither
// running nor in a syscall (its stack moves under us).
static __always_inline void pass_keep(struct config *c) {
  u32 start = c->start, count = c->count;
  struct bpf_iter_num it;
  int *ip;
  iter_new(&it, 0, GS_PER_PASS);
  while ((ip = iter_next(&it))) {
    u32 i = *ip;
    if (i >= count)
      break;
    u32 k = c->pre_base + start + i;
    struct grec *r = gout.lookup(&i);
    struct ghdr *pe = pre.lookup(&k);
    if (!r || !pe)
      break;
    u64 status = r->h[H_STATUS], flags = r->h[H_FLAGS];
    pe->gp = r->h[H_GP];
    pe->goid = r->h[H_GOID];
    pe->sp = r->h[H_SP];
    pe->pc = r->h[H_PC];
    pe->bp = r->h[H_BP];
    pe->lo = r->h[H_LO];
    pe->hi = r->h[H_HI];
    pe->waitsince = r->h[H_WAITSINCE];
    pe->status = status;
    u32 ok = !(flags & (F_BADFP | F_READFAIL | F_NOG)) && status != GSTATUS_RUNNING &&
             status != GSTATUS_SYSCALL;
    pe->small = (r->h[H_WAITREASON] & 0xffff) | (ok ? PRE_VALID : 0);
  }
  iter_destroy(&it);
}

// MODE_VERIFY: whether allgs[index] (at gp, its g read into g) is the goroutine kept.
static __always_inline int unchanged(struct config *c, u8 *g, u64 gp, u64 index) {
  if (index >= c->pre_count || index >= PRE_MAX || !g)
    return 0;
  u32 k = c->pre_base + index;   // past PRE_MAX: no entry (the collector never sets that)
  struct ghdr *pe = pre.lookup(&k);
  if (!pe || !(pe->small & PRE_VALID) || pe->gp != gp)
    return 0;
  u32 status = *(u32 *)(g + (OFF_STATUS & (G_COPY - 1))) & ~0x1000u;
  if (status != pe->status)
    return 0;
  if (status == GSTATUS_DEAD)
    return 1;
  u64 mask = c->verify == VERIFY_NOSEQ ? 0xff : 0xffff;
  u64 diff = ((g_small(g) ^ pe->small) & mask) | (g_word(g, OFF_GOID) ^ pe->goid) |
             (g_word(g, OFF_SCHED_SP) ^ pe->sp) | (g_word(g, OFF_SCHED_PC) ^ pe->pc) |
             (g_word(g, OFF_SCHED_BP) ^ pe->bp) | (g_word(g, OFF_STACK_LO) ^ pe->lo) |
             (g_word(g, OFF_STACK_HI) ^ pe->hi) | (g_word(g, OFF_WAITSINCE) ^ pe->waitsince);
  return diff == 0;
}

// MODE_VERIFY, once per pass: the sum of runtime.sched.timeToRun's counts.
static __always_inline void sum_hist(struct task_struct *task, struct config *c,
                                     struct out_t *o, struct scratch_t *s) {
  u64 n = c->hist_words;
  o->hist_sum = ~0ull;
  if (!c->hist_addr || n == 0 || n > HIST_WORDS)
    return;
  u64 bytes = n * 8;
  asm volatile("" : "+r"(bytes));
  bytes &= HIST_WORDS * 8 * 2 - 1;
  if (bytes > HIST_WORDS * 8 || bytes == 0)
    return;
  if (COPY_USER(s->win, bytes, (void *)c->hist_addr, task))
    return;
  u64 sum = 0;
  struct bpf_iter_num it;
  int *ip;
  iter_new(&it, 0, HIST_WORDS);
  while ((ip = iter_next(&it))) {
    u32 i = *ip;
    if (i >= n)
      break;
    sum += *(u64 *)(s->win + ((i * 8) & (WIN - 1)));
  }
  iter_destroy(&it);
  o->hist_sum = sum;
}

// MODE_VERIFY over allgs[0 .. min(allglen, PRE_MAX)), GCHUNK at a time claimed from
// cfg.cursor (helper threads share it): only the allgs array and the g structs are read,
// never a stack. Each chunk's word of `redo` is written whole (stale bits never survive).
static __always_inline u32 pass_verify(struct task_struct *task, struct config *c,
                                       struct out_t *o, struct scratch_t *s) {
  u64 allglen = 0, allgs = 0;
  COPY_USER(&allglen, 8, (void *)c->allglen_addr, task);
  COPY_USER(&allgs, 8, (void *)c->allgs_addr, task);
  o->allglen = allglen;
  o->allgs = allgs;
  u64 count = allglen < PRE_MAX ? allglen : PRE_MAX;
  u32 walked = 0;
  struct bpf_iter_num chunks;
  int *cp;
  iter_new(&chunks, 0, PRE_MAX / GCHUNK);
  while ((cp = iter_next(&chunks))) {
    u64 first;
    u32 n = claim_gchunk(c, count, &first);
    if (!n)
      break;
    u32 w = first / GCHUNK;
    u64 *bits = redo.lookup(&w);
    if (!bits)
      break;
    if (read_gptrs(task, o, s, allgs + first * 8, n)) {
      *bits = ~0ull;   // unread: the whole chunk walked again, if the pass goes on at all
      break;
    }
    walked += n;
    u64 gbase = 0, mark = 0;
    struct bpf_iter_num it;
    int *jp;
    iter_new(&it, 0, GCHUNK);
    while ((jp = iter_next(&it))) {
      u32 j = *jp;
      if (j >= n)
        break;
      u64 gp = s->ptrs[j & (GCHUNK - 1)];
      u8 *g = gp ? read_g(task, s, gp, &gbase) : 0;
      if (unchanged(c, g, gp, first + j))
        continue;
      mark |= 1ull << (j & 63);
      u32 q = __sync_fetch_and_add(&o->nchanged, 1);
      u32 *slot = changed.lookup(&q);
      if (slot)
        *slot = first + j;
    }
    iter_destroy(&it);
    *bits = mark;
  }
  iter_destroy(&chunks);
  return walked;
}

static __always_inline int pass_continue(struct task_struct *task, struct config *c,
                                         struct out_t *o, struct scratch_t *s) {
  u32 n = c->start;
  struct bpf_iter_num it;
  int *ip;
  iter_new(&it, 0, CONT_PER_PASS);
  while ((ip = iter_next(&it))) {
    u32 i = *ip;
    if (i >= n)
      break;
    struct cont *ct = conts.lookup(&i);
    if (!ct)
      break;
    struct grec *r = &o->cg[i & (CONT_PER_PASS - 1)];
    r->h[H_INDEX] = ct->slot;
    r->h[H_FLAGS] = 0;
    r->h[H_CONT_FP] = 0;
    walk(task, s, r->f, &r->h[H_NFRAMES], 0, ct->fp, ct->lo, ct->hi, &r->h[H_FLAGS],
         &r->h[H_CONT_FP]);
  }
  iter_destroy(&it);
  o->nrecs = n;
  return 0;
}

static __always_inline void walk_allm(struct task_struct *task, struct config *c,
                                      struct out_t *o, struct scratch_t *s) {
  u64 m = 0;
  COPY_USER(&m, 8, (void *)c->allm_addr, task);
  u32 n = 0;
  for (u32 i = 0; i < MAX_MS; i++) {
    if (m == 0)
      break;
    if (COPY_USER(s->m, M_COPY, (void *)m, task)) {
      o->errors++;
      break;
    }
    struct mrec *r = &o->th.m[i & (MAX_MS - 1)];
    r->m = m;
    r->procid = *(u64 *)(s->m + (OFF_M_PROCID & (M_COPY - 1)));
    r->curg = *(u64 *)(s->m + (OFF_M_CURG & (M_COPY - 1)));
    n++;
    m = *(u64 *)(s->m + (OFF_M_ALLLINK & (M_COPY - 1)));
  }
  o->nms = n;
}

// The ucontext of the signal a thread is handling, 0 when it is not in the Go signal
// handler. The kernel enters runtime.sigtramp with sp at its signal frame, whose first
// word (the return address) is runtime.sigreturn__sigaction; the ucontext follows it.
//  - in sigreturn__sigaction (sigtramp returned): sp is at the ucontext;
//  - in sigtramp while its frame pointer is not set up (or no longer): the return address
//    is among the few words above sp;
//  - deeper (sigtrampgo, sighandler, sigprof ...): the frame-pointer chain goes through
//    sigtramp's frame, whose return address is sigreturn__sigaction: the ucontext is at
//    that frame's pointer + 16. Frame k (k >= 1) was read at frame k-1's pointer.
static __always_inline u64 signal_context(struct config *c, struct trec *t) {
  u64 ret = c->sigret_lo;
  if (!ret)
    return 0;
  if (t->ip - ret < c->sigret_hi - ret)
    return t->sp;
  if (t->ip - c->sigtramp_lo < c->sigtramp_hi - c->sigtramp_lo) {
    for (int i = 0; i < SIGTRAMP_WORDS; i++)
      if (t->stk[i] == ret)
        return t->sp + 8 * i + 8;
    return 0;
  }
  u64 n = t->nframes, uc = 0;
  struct bpf_iter_num it;
  int *kp;
  iter_new(&it, 1, MAX_FRAMES);
  while ((kp = iter_next(&it))) {
    u32 k = *kp;
    if (k >= n)
      break;
    if (t->f[(2 * k) & (2 * MAX_FRAMES - 2)] == ret) {
      uc = t->f[(2 * k - 1) & (2 * MAX_FRAMES - 1)] + 16;
      break;
    }
  }
  iter_destroy(&it);
  return uc;
}

// A thread caught in the Go signal handler (SIGURG preemption, SIGPROF): the goroutine
// it interrupted is unwound from the registers the kernel saved in the signal frame, as
// the runtime's sigctxt does, into th.sig. Costs nothing for the other threads.
// A thread's frame-pointer walk from its registers (r->ip, sp, bp set), within 1 MiB above
// its sp; where the chain leaves that window once, it goes on from there: Go calls the
// vDSO (time.Now, nanotime) on the g0 stack without saving g.sched, and the vDSO's frame
// (or time.now's, its BP left on the goroutine's stack) links back to the goroutine's own
// frames, which may lie below the g0 stack. A jump within the window stays a broken chain.
static __always_inline void walk_thread(struct task_struct *task, struct scratch_t *s,
                                        struct trec *r) {
  u64 unused = 0;
  r->f[0] = r->ip;
  r->f[1] = r->bp;
  walk(task, s, r->f, &r->nframes, 1, r->bp, r->sp, r->sp + (1 << 20), &r->flags, &unused);
  u64 n = r->nframes;
  if (!(r->flags & F_BADFP) || n == 0 || n >= MAX_FRAMES)
    return;
  u64 fp = r->f[(2 * n - 1) & (2 * MAX_FRAMES - 1)];   // the frame pointer it stopped at
  if (fp == 0 || (fp & 7) || (fp >= r->sp && fp < r->sp + (1 << 20)))
    return;
  r->flags &= ~(u64)F_BADFP;
  walk(task, s, r->f, &r->nframes, n, fp, fp, fp + (1 << 20), &r->flags, &unused);
}

static __always_inline void read_signal_context(struct task_struct *task, struct out_t *o,
                                                struct scratch_t *s, struct trec *t, u64 uc) {
  if (COPY_USER(s->regs, MC_WORDS * 8, (void *)(uc + UC_MCONTEXT), task) != 0)
    return;
  u64 idx = o->nsigs;
  o->nsigs = idx + 1;
  if (idx >= MAX_THREADS)
    return;
  struct trec *r = &o->th.sig[idx & (MAX_THREADS - 1)];
  r->tid = t->tid;
  r->ip = s->regs[MC_RIP];
  r->sp = s->regs[MC_RSP];
  r->bp = s->regs[MC_RBP];
  r->r14 = s->regs[MC_R14];
  r->uc = uc;
  r->flags = 0;
  r->nframes = 1;
  if (COPY_USER(r->stk, sizeof(r->stk), (void *)r->sp, task) != 0)
    __builtin_memset(r->stk, 0, sizeof(r->stk));
  walk_thread(task, s, r);
}

static __always_inline int pass_thread(struct bpf_iter__task *ctx, struct task_struct *task,
                                       struct config *c, struct out_t *o,
                                       struct scratch_t *s) {
  if (ctx->meta->seq_num == 0) {
    o->nthreads = 0;
    o->nsigs = 0;
    walk_allm(task, c, o, s);
  }
  u64 idx = o->nthreads;
  o->nthreads = idx + 1;
  if (idx >= MAX_THREADS)
    return 0;
  struct trec *t = &o->th.t[idx & (MAX_THREADS - 1)];
  u32 tid = 0;
  bpf_probe_read_kernel(&tid, 4, (void *)task + TASK_PID_OFF);
  t->tid = tid;
  struct pt_regs *regs = (struct pt_regs *)bpf_task_pt_regs(task);
  bpf_probe_read_kernel(s->regs, 21 * 8, regs);
  // x86-64 struct pt_regs word order: r15 r14 r13 r12 bp bx r11 r10 r9 r8 ax cx dx si di
  // orig_ax ip cs flags sp ss (a user-visible ABI: it never changes).
  t->r14 = s->regs[1];
  t->bp = s->regs[4];
  t->ip = s->regs[16];
  t->sp = s->regs[19];
  t->flags = 0;
  if (COPY_USER(t->stk, sizeof(t->stk), (void *)t->sp, task) != 0)
    __builtin_memset(t->stk, 0, sizeof(t->stk));
  // A thread's stack bounds are unknown here: frames within 1 MiB above sp (walk_thread).
  walk_thread(task, s, t);
  u64 uc = signal_context(c, t);
  if (uc)
    read_signal_context(task, o, s, t, uc);
  return 0;
}

static __always_inline int pass_reads(struct task_struct *task, struct config *c,
                                      struct out_t *o) {
  u32 n = c->start;
  struct bpf_iter_num it;
  int *ip;
  iter_new(&it, 0, READS_PER_PASS);
  while ((ip = iter_next(&it))) {
    u32 i = *ip;
    if (i >= n)
      break;
    struct readreq *rq = reads.lookup(&i);
    if (!rq)
      break;
    // Branch-free clamps the verifier can follow: size in [1, READ_MAX], off in the buffer.
    u64 size = rq->size;
    u64 off = rq->out_off;
    asm volatile("" : "+r"(size), "+r"(off));
    size = ((size - 1) & (READ_MAX - 1)) + 1;
    off &= READ_OUT - 1;
    o->rd.rc[i & (READS_PER_PASS - 1)] =
        COPY_USER(&o->rd.data[off], size, (void *)rq->addr, task);
  }
  iter_destroy(&it);
  o->nrecs = n;
  return 0;
}

int bpf_iter__task(struct bpf_iter__task *ctx) {
  struct task_struct *task = ctx->task;
  if (!task)
    return 0;
  u32 zero = 0;
  struct config *c = cfg.lookup(&zero);
  struct out_t *o = out.lookup(&zero);
  if (!c || !o)
    return 0;
  u32 me = (u32)bpf_get_current_pid_tgid(), slot = 1;
  for (int h = 0; h < MAX_HELPERS; h++)
    if (c->helper_tid[h] == me)
      slot = 2 + h;
  // A helper joins only the shared work. Both values are made opaque here: were they
  // constants the verifier knows, it would check everything below once per value.
  u32 mode = c->mode;
  u64 helping = slot != 1;
  if (helping)
    mode &= MODE_GS | MODE_CAPTURE | MODE_VERIFY;
  asm volatile("" : "+r"(slot), "+r"(mode), "+r"(helping));
  struct scratch_t *s = scratch.lookup(&slot);
  if (!s)
    return 0;
  s->cap_span = 0;   // threads and continuations: no capture hint (pass_goroutines sets it)
  if (mode & MODE_THREADS)
    pass_thread(ctx, task, c, o, s);
  // The other passes run once, on the first thread the iterator visits.
  if (ctx->meta->seq_num != 0)
    return 0;
  if (mode & MODE_GS) {
    u64 walked = pass_goroutines(task, c, o, s, c->start, c->count, 0);
    __sync_fetch_and_add(&o->helper_gs, walked * (helping & 1));
  }
  if ((mode & MODE_VERIFY) && (mode & MODE_THREADS))
    sum_hist(task, c, o, s);   // the main thread's pass only (helpers have no MODE_THREADS)
  if (mode & MODE_VERIFY) {
    u64 walked = pass_verify(task, c, o, s);
    __sync_fetch_and_add(&o->helper_gs, walked * (helping & 1));
  }
  if (mode & MODE_CAPTURE) {
    // Its own frames, then the hook's once the hook's region is complete.
    u64 deadline = capture_deadline(c);
    pass_capture(task, c, o, s, deadline, 1);
    if (o->hook_walked)
      pass_capture(task, c, o, s, deadline, 0);
  }
  if (mode == MODE_CONT)
    return pass_continue(task, c, o, s);
  if (mode == MODE_READ)
    return pass_reads(task, c, o);
  if (mode == MODE_KEEP)
    pass_keep(c);
  return 0;
}
#endif  // !IN_CONTEXT

#if IN_CONTEXT
// sched_switch, in the context of the thread switching out. Armed for one process, it
// acts once that process's group stop is complete (every thread has taken part: none can
// run user code until SIGCONT), in whichever of its threads switches out first after that,
// usually the last one to stop. It costs the rest of the system one map lookup per
// context switch, only while a snapshot is being taken (the collector attaches it then).
int sideeye_stop_hook(struct bpf_raw_tracepoint_args *ctx) {
  u32 zero = 0;
  struct config *c = cfg.lookup(&zero);
  if (!c || c->hook_state != HOOK_ARMED || (u32)(bpf_get_current_pid_tgid() >> 32) != c->hook_tgid)
    return 0;
  u64 task = bpf_get_current_task();
  u64 sig = 0;
  s32 pending = -1;
  u32 flags = 0;
  bpf_probe_read_kernel(&sig, 8, (void *)(task + TASK_SIGNAL_OFF));
  if (!sig)
    return 0;
  bpf_probe_read_kernel(&pending, 4, (void *)(sig + SIGNAL_GSC_OFF));
  bpf_probe_read_kernel(&flags, 4, (void *)(sig + SIGNAL_FLAGS_OFF));
  if (pending != 0 || !(flags & SIGNAL_STOP_STOPPED))
    return 0;
  // Threads finishing their stop can get here at once: one of them does the walk.
  if (__sync_val_compare_and_swap(&c->hook_state, HOOK_ARMED, HOOK_RUNNING) != HOOK_ARMED)
    return 0;
  struct out_t *o = out.lookup(&zero);
  struct scratch_t *s = scratch.lookup(&zero);
  if (!o || !s)
    return 0;
  // It runs with interrupts off (inside the scheduler): past its budget, it leaves the
  // goroutines not claimed yet to the iterator.
  u64 t0 = bpf_ktime_get_ns(), budget = c->hook_budget_ns;
  o->hook_gs = pass_goroutines(0, c, o, s, 0, c->hook_count, t0 + budget);
  __sync_fetch_and_add(&o->hook_walked, 1);   // a full barrier: capq entries first
  // Then the frames it queued (its region of capq is complete), while its budget lasts;
  // the collector's capture pass reads its own and whatever the hook left.
  // Only with time left: starting the capture clock here with none would spend the
  // capture's budget on the iterator's walk, which comes before its capture (at 10,000
  // goroutines the frames queued last were never reached).
  u64 hook_end = t0 + budget;
  if (c->cap_hi && bpf_ktime_get_ns() < hook_end) {
    u64 cap_end = capture_deadline(c);
    pass_capture(0, c, o, s, cap_end < hook_end ? cap_end : hook_end, 0);
  }
  o->hook_ns = bpf_ktime_get_ns() - t0;
  // An atomic add is a full barrier: the records are visible before the state says done.
  __sync_fetch_and_add(&c->hook_state, HOOK_DONE - HOOK_RUNNING);
  return 0;
}
#endif
