/* Crash safety of training with checkpoints (the command line, run as a child):
 * a short run is killed with SIGKILL at random moments, again and again, each
 * time resumed from whatever is on disk; at the end its checkpoint must equal the
 * one of an uninterrupted run bit for bit, and every checkpoint found on disk
 * after a kill must load.
 *
 * To land some kills inside a checkpoint write, the children run with the test
 * hook PROXYNORM_TEST_SAVE_DELAY_MS (src/io/safetensors.c: a sleep after the
 * temporary file is written, before fsync and rename). A kill that leaves CKPT.tmp
 * (removed before each start) was a kill during a write. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"
#include "synth_idx.h"
#include "cli_util.h"
#include "train/trainer.h"

#define KILLS_MIN 20        /* kills before the run may finish */
#define KILLS_IN_WRITE_MIN 3 /* of which during a checkpoint write */
#define MAX_TRIES 200

static char datadir[300], ref[320], ck[320], cktmp[330];

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

static int exists(const char *p)
{
    struct stat st;
    return stat(p, &st) == 0;
}

/* Starts proxynorm train (fresh with --save PATH, or --resume PATH). */
static pid_t start(const char *path, int resume)
{
    pid_t pid = fork();
    if (pid != 0) return pid;
    int fd = open("/dev/null", O_RDWR);
    if (fd >= 0) {
        dup2(fd, 0);
        dup2(fd, 1);
        dup2(fd, 2);
    }
    setenv("OMP_WAIT_POLICY", "passive", 1);
    setenv("OMP_NUM_THREADS", "1", 1);
    setenv("PROXYNORM_TEST_SAVE_DELAY_MS", "10", 1);
    if (resume) {
        execl(cu_bin, cu_bin, "train", "--data", datadir, "--resume", path, "--save-every", "1",
              "--threads", "1", (char *)NULL);
    } else {
        execl(cu_bin, cu_bin, "train", "--data", datadir, "--model", "resnet8", "--width", "4",
              "--groups", "2", "--epochs", "2", "--batch", "8", "--lr", "0.05", "--seed", "3",
              "--save", path, "--save-every", "1", "--threads", "1", (char *)NULL);
    }
    _exit(127);
}

static int wait_status(pid_t pid)
{
    int st;
    while (waitpid(pid, &st, 0) < 0)
        if (errno != EINTR) return -1;
    return st;
}

TEST(kill9_and_resume_reaches_the_same_parameters)
{
    /* The uninterrupted run, timed. */
    double t0 = now_s();
    int st = wait_status(start(ref, 0));
    double t_run = now_s() - t0;
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "uninterrupted run: status 0x%x", st);
    long ref_step = -1;
    pn_train_config rc_cfg;
    CHECK(pn_checkpoint_read_config(ref, &rc_cfg, &ref_step) == PN_OK && ref_step > 4,
          "reference checkpoint: %s", pn_last_error());
    if (harness_cur_failed) return;

    harness_seed(20261127);
    int kills = 0, in_write = 0, finished_early = 0, resumes = 0;
    for (int tries = 0; tries < MAX_TRIES && (kills < KILLS_MIN || in_write < KILLS_IN_WRITE_MIN);
         tries++) {
        int resume = exists(ck);
        if (resume) resumes++;
        unlink(cktmp); /* left by an earlier kill: CKPT.tmp after this kill = a write under way */
        pid_t pid = start(ck, resume);
        /* Anywhere from the start-up to the end of what is left of the run. */
        long done = 0;
        pn_train_config c0;
        if (resume && pn_checkpoint_read_config(ck, &c0, &done) != PN_OK) done = 0;
        double left = 1.0 - (double)done / (double)ref_step;
        double delay = harness_uniform() * t_run * (left > 0.25 ? left : 0.25);
        struct timespec ts = { (time_t)delay, (long)((delay - (time_t)delay) * 1e9) };
        nanosleep(&ts, NULL);
        int killed = kill(pid, SIGKILL) == 0;
        st = wait_status(pid);
        if (killed && WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL) {
            kills++;
            if (exists(cktmp)) in_write++;
        } else {
            /* It ended first: a finished run starts over. */
            CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "run %d: status 0x%x", tries, st);
            finished_early++;
            unlink(ck);
        }
        /* Whatever is on disk loads. */
        if (exists(ck)) {
            pn_train_config c;
            long step = -1;
            int ok = pn_checkpoint_read_config(ck, &c, &step) == PN_OK;
            CHECK(ok && step >= 1 && step <= ref_step, "after kill %d: checkpoint does not load "
                  "(%s) or step %ld", kills, pn_last_error(), step);
            if (!ok) return;
        }
    }
    printf("  %d kills (%d during a checkpoint write), %d resumes, %d runs finished before "
           "their kill; uninterrupted run %.2f s\n", kills, in_write, resumes, finished_early,
           t_run);
    CHECK(kills >= KILLS_MIN && in_write >= KILLS_IN_WRITE_MIN,
          "only %d kills, %d during a write", kills, in_write);

    /* Finish the run and compare. */
    st = wait_status(start(ck, exists(ck)));
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "final resume: status 0x%x", st);
    long step = -1;
    pn_train_config c;
    CHECK(pn_checkpoint_read_config(ck, &c, &step) == PN_OK && step == ref_step,
          "final checkpoint at step %ld, want %ld", step, ref_step);
    CHECK(cu_same_tensors(ck, ref), "the killed-and-resumed run's parameters differ from the "
          "uninterrupted run's");
}

int main(void)
{
    if (cu_find_bin() != 0) {
        printf("FAIL setup: %s not found (the Makefile builds it before the tests)\nRESULT 0 1\n",
               cu_bin);
        return 1;
    }
    if (cu_make_tmpdir("crash")) return 1;
    snprintf(datadir, sizeof datadir, "%s/data", cu_tmpdir);
    if (cu_write_data(datadir, 64, 16, 8)) {
        printf("RESULT 0 1\n");
        return 1;
    }
    snprintf(ref, sizeof ref, "%s/ref.safetensors", cu_tmpdir);
    snprintf(ck, sizeof ck, "%s/ck.safetensors", cu_tmpdir);
    snprintf(cktmp, sizeof cktmp, "%s.tmp", ck);
    RUN(kill9_and_resume_reaches_the_same_parameters);
    cu_remove_tmpdir();
    return harness_summary();
}
