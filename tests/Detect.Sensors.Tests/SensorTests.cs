using System.Diagnostics;
using Detect.Records;
using Detect.Sensors.Bpf;
using Detect.Testing;

namespace Detect.Sensors.Tests;

/// <summary>The syscall and process sensors in the real kernel, driven by processes whose calls are known.</summary>
[Trait("Needs", "Kernel")]
public sealed class SensorTests
{
    private const uint NrGetppid = 110, NrExitGroup = 231, NrExit = 60;

    [Fact]
    public void SyscallRecords_KGetppidCallsFromAChild_YieldKRecordsWithItsPidAndNumber110()
    {
        const int K = 2500;
        using var h = new SensorHarness(new SensorOptions { ProcessEvents = false });
        using var child = Workload.StartGated(K);
        h.Collector.Watch(child.Pid);
        child.Go();
        Assert.Equal(0, child.WaitForExit());
        h.WaitUntil(() => h.Collector.Syscalls(child.Pid).Any(s => s.Nr == NrExitGroup), "the child's exit_group record");

        var records = h.Collector.Syscalls(child.Pid);
        var getppid = records.Where(s => s.Nr == NrGetppid).ToList();
        Assert.Equal(K, getppid.Count);
        Assert.All(getppid, s =>
        {
            Assert.Equal((uint)child.Pid, s.Task.Pid);
            Assert.Equal((uint)child.Pid, s.Task.Tgid);
            Assert.Equal((uint)Environment.ProcessId, s.Task.Ppid);
            Assert.Equal(Environment.ProcessId, s.Ret); // getppid returns the parent: this process
            Assert.Equal(SyscallFlags.None, s.Flags);
            Assert.Equal("detect-workload", s.Task.CommString);
            Assert.Equal(RecordFormat.Magic, s.Header.Magic);
            Assert.Equal(SyscallRecord.Size, s.Header.Length);
        });
        Assert.True(getppid.Zip(getppid.Skip(1)).All(p => p.First.Header.KtimeNs <= p.Second.Header.KtimeNs), "records of one thread come in time order");

        var exit = Assert.Single(records, s => s.Nr == NrExitGroup);
        Assert.Equal(SyscallFlags.NoReturn, exit.Flags);
        Assert.Equal(0, exit.Ret);
        // Every call after the start byte: the read() that waited for it, K getppid, exit_group.
        // (Calls before it - .NET's start-up code in the forked child, the execve - may be drained
        // before the test starts watching the pid.)
        var afterGo = records.SkipWhile(s => s.Nr != 0 || s.Task.CommString != "detect-workload").ToList();
        Assert.True(K + 2 == afterGo.Count, $"{afterGo.Count} records from the read on: " +
            string.Join(", ", afterGo.Where(s => s.Nr != NrGetppid).Select(s => $"nr {s.Nr} ret {s.Ret}")));
        Assert.Equal(1, afterGo[0].Ret); // the read of the one start byte
        Assert.Equal(0UL, h.Agent.ReadLosses().Lost(RecordType.Syscall));
    }

    [Fact]
    public void SyscallRecords_TheAgentsOwnCalls_AreNotRecorded()
    {
        using var h = new SensorHarness(new SensorOptions { ProcessEvents = false });
        h.Collector.Watch(Environment.ProcessId);
        using var child = Workload.StartGated(10);
        h.Collector.Watch(child.Pid);
        for (var i = 0; i < 200; i++) getppid();
        child.Go();
        child.WaitForExit();
        h.WaitUntil(() => h.Collector.Syscalls(child.Pid).Any(s => s.Nr == NrExitGroup), "the child's records");
        Assert.Empty(h.Collector.Syscalls(Environment.ProcessId));
    }

    [Fact]
    public void ProcessRecords_ExecOfBinTrue_YieldsExecAndExitWithFilenameAndCode()
    {
        using var h = new SensorHarness(new SensorOptions { SyscallMode = SyscallMode.Off });
        var pid = RunToEnd("/bin/true");
        var falsePid = RunToEnd("/bin/false", "--an-argument");
        h.WaitUntil(() => h.Collector.Exits(pid).Count == 1 && h.Collector.Exits(falsePid).Count == 1, "exit records of /bin/true and /bin/false");

        var exec = Assert.Single(h.Collector.Execs(pid));
        Assert.Equal("/bin/true", exec.FilenameString);
        Assert.Equal(["/bin/true"], exec.ArgsList);
        Assert.Equal((uint)pid, exec.Task.Tgid);
        Assert.Equal((uint)Environment.ProcessId, exec.Task.Ppid);
        Assert.Equal("true", exec.Task.CommString);
        var exit = Assert.Single(h.Collector.Exits(pid));
        Assert.Equal(0, exit.ExitCode);
        Assert.Equal("true", exit.Task.CommString);
        Assert.True(exit.Header.KtimeNs > exec.Header.KtimeNs);
        Assert.True(exit.DurationNs > 0 && exit.DurationNs < 10_000_000_000UL, $"duration {exit.DurationNs} ns");

        var falseExec = Assert.Single(h.Collector.Execs(falsePid));
        Assert.Equal(["/bin/false", "--an-argument"], falseExec.ArgsList);
        var falseExit = Assert.Single(h.Collector.Exits(falsePid));
        Assert.Equal(1 << 8, falseExit.ExitCode); // wait(2) status: exit code 1
        Assert.Equal(1, falseExit.ExitStatus);
    }

    [Fact]
    public void ProcessRecords_KilledProcess_ExitCodeCarriesTheSignal()
    {
        using var h = new SensorHarness(new SensorOptions { SyscallMode = SyscallMode.Off });
        using var sleeper = Process.Start(new ProcessStartInfo("/bin/sleep", "30") { UseShellExecute = false })!;
        h.WaitUntil(() => h.Collector.Execs(sleeper.Id).Count == 1, "the exec of sleep");
        sleeper.Kill();
        sleeper.WaitForExit();
        h.WaitUntil(() => h.Collector.Exits(sleeper.Id).Count == 1, "the exit of sleep");
        var exit = Assert.Single(h.Collector.Exits(sleeper.Id));
        Assert.Equal(9, exit.TermSignal); // SIGKILL
        Assert.Equal(9, exit.ExitCode);
    }

    [Fact]
    public void ProcessRecords_Fork_IsRecordedForANewProcessButNotForAThread()
    {
        using var h = new SensorHarness(new SensorOptions { SyscallMode = SyscallMode.Off });
        var (pid, code) = Workload.Run("fork", 3); // one fork (child exits 3), one thread
        Assert.Equal(0, code);
        h.WaitUntil(() => h.Collector.Exits(pid).Count == 1, "the workload's exit");

        var fork = Assert.Single(h.Collector.Forks(pid)); // the thread made no fork record
        Assert.Equal((uint)pid, fork.Task.Tgid);
        Assert.NotEqual((uint)pid, fork.ChildPid);
        Assert.True(fork.ChildStartNs > fork.Task.StartNs);
        h.WaitUntil(() => h.Collector.Exits((int)fork.ChildPid).Count == 1, "the forked child's exit");
        var childExit = Assert.Single(h.Collector.Exits((int)fork.ChildPid));
        Assert.Equal(3 << 8, childExit.ExitCode);
        Assert.Equal((uint)pid, childExit.Task.Ppid);
        Assert.Single(h.Collector.Exits(pid)); // the thread's end was not the process's
    }

    [Fact]
    public void SummaryMode_CountsEqualThePerSyscallRecords_ForTheSameWorkload()
    {
        const int N = 3000; // 4 calls per round, half of them failing
        Dictionary<uint, int> perRecord;
        int recordsFailed;
        // Children started before the agent and listed in its pid filter: both runs see exactly
        // the calls from the start byte on.
        using (var child = Workload.StartGated(N, "mix"))
        using (var h = new SensorHarness(new SensorOptions { ProcessEvents = false, Pids = [child.Pid] }))
        {
            h.Collector.Watch(child.Pid);
            child.Go();
            child.WaitForExit();
            h.WaitUntil(() => h.Collector.Syscalls(child.Pid).Any(s => s.Nr == NrExitGroup), "the records run's exit_group");
            var records = h.Collector.Syscalls(child.Pid);
            perRecord = records.GroupBy(s => s.Nr).ToDictionary(g => g.Key, g => g.Count());
            recordsFailed = records.Count(s => s.Ret < 0);
        }

        // Same workload under summaries, with a 1 ms interval so that one process gives many.
        using (var child = Workload.StartGated(N, "mix"))
        using (var h = new SensorHarness(new SensorOptions { SyscallMode = SyscallMode.Summary, ProcessEvents = false, Pids = [child.Pid], SummaryInterval = TimeSpan.FromMilliseconds(1) }))
        {
            child.Go();
            child.WaitForExit();
            h.WaitUntil(() => h.Collector.Summaries(child.Pid).Any(s => (s.Flags & SummaryFlags.ProcessExited) != 0), "the summary written at exit");
            var summaries = h.Collector.Summaries(child.Pid);
            var perSummary = new Dictionary<uint, int>();
            foreach (var s in summaries)
                for (var nr = 0; nr < RecordFormat.SyscallSlots; nr++)
                    if (s.Counts[nr] != 0) perSummary[(uint)nr] = perSummary.GetValueOrDefault((uint)nr) + (int)s.Counts[nr];
            TestContext.Current.TestOutputHelper?.WriteLine($"{summaries.Count} summaries for {perRecord.Values.Sum()} calls");

            Assert.Equal(perRecord.OrderBy(p => p.Key), perSummary.OrderBy(p => p.Key));
            Assert.Equal(perRecord.Values.Sum(), summaries.Sum(s => (int)s.Total));
            Assert.Equal(recordsFailed, summaries.Sum(s => (int)s.Failed));
            Assert.Equal(2 * N, recordsFailed);
            Assert.Equal(N, perSummary[NrGetppid]);
            Assert.True(summaries.Count > 1, "a 1 ms interval splits the run into several summaries");
            Assert.All(summaries, s => Assert.True(s.IntervalStartNs <= s.Header.KtimeNs));
            Assert.Equal(0UL, h.Agent.ReadLosses().TotalLost);
        }
    }

    [Fact]
    public void SummaryMode_IdleProcess_IsFlushedByTheAgent()
    {
        using var h = new SensorHarness(new SensorOptions { SyscallMode = SyscallMode.Summary, ProcessEvents = false, SummaryInterval = TimeSpan.FromMilliseconds(200) });
        using var sleeper = Process.Start(new ProcessStartInfo("/bin/sleep", "5") { UseShellExecute = false })!;
        try
        {
            // sleep makes its start-up calls, then sleeps: only the agent's idle flush reports them.
            h.WaitUntil(() => h.Collector.Summaries(sleeper.Id).Any(s => (s.Flags & SummaryFlags.UserFlushed) != 0), "a user-flushed summary of the sleeping process");
            var s = h.Collector.Summaries(sleeper.Id).First(s => (s.Flags & SummaryFlags.UserFlushed) != 0);
            Assert.True(s.Total > 0);
            Assert.Equal("sleep", s.Task.CommString);
        }
        finally
        {
            sleeper.Kill();
            sleeper.WaitForExit();
        }
    }

    [Fact]
    public void PidFilter_OnlyTheListedProcessIsRecorded()
    {
        using var listed = Workload.StartGated(500);
        using var h = new SensorHarness(new SensorOptions { Pids = [listed.Pid] });
        h.Collector.Watch(listed.Pid);
        using var other = Workload.StartGated(500);
        h.Collector.Watch(other.Pid);
        other.Go();
        listed.Go();
        listed.WaitForExit();
        other.WaitForExit();
        h.WaitUntil(() => h.Collector.Syscalls(listed.Pid).Any(s => s.Nr == NrExitGroup), "the listed process's exit_group");
        h.WaitUntil(() => h.Collector.Exits(listed.Pid).Count == 1, "the listed process's exit");
        Assert.Equal(500, h.Collector.Syscalls(listed.Pid).Count(s => s.Nr == NrGetppid));
        Assert.Empty(h.Collector.Syscalls(other.Pid));
        Assert.Empty(h.Collector.Exits(other.Pid));
        Assert.Equal(0, h.Collector.OtherSyscalls);
    }

    [Fact]
    public void CgroupFilter_OnlyProcessesInTheCgroupAreRecorded()
    {
        Needs.KernelBtf();
        var root = CgroupPath.V2Root();
        if (root == null) Assert.Skip("cgroup v2 is not mounted on this host");
        var dir = Path.Combine(root, $"detect-test-{Environment.ProcessId}-{Guid.NewGuid():N}"[..40]);
        Directory.CreateDirectory(dir);
        try
        {
            using var inside = Workload.StartGated(300);
            File.WriteAllText(Path.Combine(dir, "cgroup.procs"), inside.Pid.ToString(System.Globalization.CultureInfo.InvariantCulture));
            using (var h = new SensorHarness(new SensorOptions { Cgroups = [dir] }))
            {
                using var outside = Workload.StartGated(300);
                h.Collector.Watch(inside.Pid);
                h.Collector.Watch(outside.Pid);
                outside.Go();
                inside.Go();
                inside.WaitForExit();
                outside.WaitForExit();
                h.WaitUntil(() => h.Collector.Syscalls(inside.Pid).Any(s => s.Nr == NrExitGroup), "the exit_group of the process in the cgroup");
                var records = h.Collector.Syscalls(inside.Pid);
                Assert.Equal(300, records.Count(s => s.Nr == NrGetppid));
                Assert.All(records, s => Assert.Equal(CgroupPath.Id(dir), s.Task.CgroupId));
                Assert.Empty(h.Collector.Syscalls(outside.Pid));
            }
        }
        finally
        {
            // The processes have ended, so the cgroup is empty and can go.
            for (var i = 0; i < 50 && Directory.Exists(dir); i++)
            {
                try { Directory.Delete(dir); } catch (IOException) { Thread.Sleep(20); }
            }
        }
        Assert.False(Directory.Exists(dir));
    }

    [Fact]
    public void Losses_ATinyUndrainedRing_CountsEveryRecordItCouldNotTake()
    {
        Needs.KernelBtf();
        const int K = 20_000;
        using var child = Workload.StartGated(K);
        using var agent = SensorAgent.Start(new SensorOptions { ProcessEvents = false, Pids = [child.Pid], SyscallRingBytes = 4096 });
        var collector = new Collector();
        collector.Watch(child.Pid);
        child.Go(); // nobody drains while the storm runs: the 4 KiB ring fills at once
        child.WaitForExit();
        agent.Stop(collector);

        var drained = collector.Syscalls(child.Pid).Count;
        var lost = agent.ReadLosses().Lost(RecordType.Syscall);
        TestContext.Current.TestOutputHelper?.WriteLine($"drained {drained}, lost {lost}");
        Assert.True(lost > 0);
        Assert.True(drained > 0);
        Assert.Equal((ulong)(K + 2), (ulong)drained + lost); // read + K getppid + exit_group
    }

    [Fact]
    public void Stop_DetachesEveryProgram_AndDisposeUnloadsThem()
    {
        Needs.KernelBtf();
        var agent = SensorAgent.Start(new SensorOptions { SyscallMode = SyscallMode.Summary });
        var ids = agent.Objects.SelectMany(o => o.Programs).Select(p => p.Id).Where(id => id != 0).ToList();
        Assert.NotEmpty(ids);
        Assert.All(ids, id => Assert.True(BpfSystem.ProgramExists(id)));
        var collector = new Collector();
        agent.Stop(collector);
        Assert.All(agent.Objects.SelectMany(o => o.Programs), p => Assert.Null(p.Link));
        agent.Dispose();
        agent.Dispose(); // harmless
        // Program memory is freed after an RCU grace period.
        var deadline = Environment.TickCount64 + 5000;
        while (ids.Any(BpfSystem.ProgramExists) && Environment.TickCount64 < deadline) Thread.Sleep(20);
        Assert.DoesNotContain(ids, BpfSystem.ProgramExists);
    }

    [Fact]
    public void Start_AttachReport_ListsEverySensorProgram()
    {
        using var h = new SensorHarness(new SensorOptions { SyscallMode = SyscallMode.Summary });
        var attached = h.Agent.Report.Attached.Select(p => p.AttachPoint).Order().ToList();
        Assert.Equal(["tp_btf/sched_process_exec", "tp_btf/sched_process_exit", "tp_btf/sched_process_exit", "tp_btf/sched_process_fork", "tp_btf/sys_exit",
            "tracepoint/syscalls/sys_enter_exit", "tracepoint/syscalls/sys_enter_exit_group"], attached);
        Assert.Empty(h.Agent.Report.Failed);
    }

    private static int RunToEnd(string file, params string[] args)
    {
        var psi = new ProcessStartInfo(file) { UseShellExecute = false };
        foreach (var a in args) psi.ArgumentList.Add(a);
        using var p = Process.Start(psi)!;
        p.WaitForExit();
        return p.Id;
    }

    [System.Runtime.InteropServices.DllImport("libc")]
    private static extern int getppid();
}
