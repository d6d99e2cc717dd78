using System.Runtime.InteropServices;
using Detect.Records;
using Detect.Sensors.Bpf;
using Detect.Testing;

namespace Detect.Sensors.Tests;

/// <summary>
/// The loader against the real kernel, with bpf/loader_selftest.bpf.o: a tp_btf program that
/// counts one process's getppid calls into an array, a per-CPU array, a hash and a ring, and an
/// fentry program this kernel refuses.
/// </summary>
[Trait("Needs", "Kernel")]
public sealed class LoaderTests
{
    private const uint Getppid = 110;

    private static BpfObject OpenSelftest(int watchTgid)
    {
        Needs.KernelBtf();
        BpfSystem.EnsureMounted();
        var obj = BpfObject.Open(BpfObject.Find("loader_selftest.bpf.o"));
        obj.SetReadOnly("watch_tgid", (uint)watchTgid);
        obj.SetReadOnly("watch_nr", Getppid);
        return obj;
    }

    [Fact]
    public void Loader_RefusedProgram_IsNamedWithAttachPointAndReason_AndTheOthersRun()
    {
        using var child = Workload.StartGated(300);
        using var obj = OpenSelftest(child.Pid);
        obj.Load();
        var report = obj.AttachAll();
        TestContext.Current.TestOutputHelper?.WriteLine(report.ToString());

        var fentry = Assert.Single(report.Programs, p => p.Program == "selftest_fentry");
        Assert.NotEqual(ProgramState.Attached, fentry.State);
        Assert.Equal("fentry/do_nanosleep", fentry.AttachPoint);
        Assert.Equal(1, fentry.Errno); // EPERM: fentry is locked down on this kernel
        Assert.Contains("EPERM", fentry.ToString(), StringComparison.Ordinal);
        Assert.Contains("selftest_fentry", fentry.ToString(), StringComparison.Ordinal);
        Assert.Contains("fentry/do_nanosleep", fentry.ToString(), StringComparison.Ordinal);

        var tp = Assert.Single(report.Attached);
        Assert.Equal("selftest_sys_exit", tp.Program);
        Assert.Equal("tp_btf/sys_exit", tp.AttachPoint);

        child.Go();
        Assert.Equal(0, child.WaitForExit());
        Assert.True(obj.Maps["selftest_count"].TryLookup(0u, out ulong count));
        Assert.Equal(300UL, count);
    }

    [Fact]
    public void Loader_StrictLoad_ThrowsNamingTheRefusedProgram()
    {
        Needs.KernelBtf();
        using var obj = BpfObject.Open(BpfObject.Find("loader_selftest.bpf.o"), new BpfObjectOptions { StrictLoad = true });
        var e = Assert.Throws<BpfException>(obj.Load);
        Assert.Equal("selftest_fentry", e.Program);
        Assert.Equal("fentry/do_nanosleep", e.AttachPoint);
        Assert.Contains("selftest_fentry", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Maps_UpdateLookupDeleteIterate_RoundTrip()
    {
        using var obj = OpenSelftest(-1);
        obj.Programs["selftest_fentry"].AutoLoad = false;
        obj.Load();
        Assert.Empty(obj.Refusals);
        var map = obj.Maps["selftest_by_tid"];
        Assert.Equal(BpfMapType.Hash, map.Type);
        Assert.Equal(4, map.KeySize);
        Assert.Equal(8, map.ValueSize);

        for (var k = 1u; k <= 10; k++) map.Update(k, k * 100UL);
        Assert.Equal(Enumerable.Range(1, 10).Select(i => (uint)i).Order(), map.Keys<uint>().Order());
        Assert.True(map.TryLookup(7u, out ulong v7));
        Assert.Equal(700UL, v7);
        Assert.False(map.TryLookup(70u, out ulong _));

        Assert.Throws<BpfException>(() => map.Update(7u, 1UL, BpfUpdate.NoExist));
        map.Update(7u, 1UL, BpfUpdate.Exist);
        Assert.True(map.TryLookup(7u, out v7));
        Assert.Equal(1UL, v7);

        Assert.True(map.Delete(7u));
        Assert.False(map.Delete(7u));
        Span<byte> value = stackalloc byte[8];
        Assert.True(map.TryLookupAndDelete(BitConverter.GetBytes(8u), value));
        Assert.Equal(800UL, BitConverter.ToUInt64(value));
        Assert.Equal(8, map.Keys<uint>().Count);

        var e = Assert.Throws<ArgumentException>(() => map.Update(1UL, 1UL));
        Assert.Contains("selftest_by_tid", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Maps_PerCpuCounters_SumToTheCallsMade()
    {
        using var child = Workload.StartGated(1234);
        using var obj = OpenSelftest(child.Pid);
        obj.Programs["selftest_fentry"].AutoLoad = false;
        obj.Load();
        obj.AttachAll();
        child.Go();
        child.WaitForExit();
        var perCpu = obj.Maps["selftest_percpu"];
        Assert.True(perCpu.IsPerCpu);
        Assert.Equal(1234UL, perCpu.SumPerCpu(0u));
        var values = new ulong[BpfSystem.PossibleCpus];
        Assert.True(perCpu.TryLookupPerCpu(0u, values.AsSpan()));
        Assert.Equal(1234UL, values.Aggregate(0UL, (a, b) => a + b));
        Assert.Equal(1234UL, obj.Maps["selftest_by_tid"].TryLookup((uint)child.Pid, out ulong byTid) ? byTid : 0);
    }

    [Fact]
    public void Maps_PinnedMap_IsReadableFromItsPin_AndUnpinRemovesIt()
    {
        var dir = Path.Combine(BpfSystem.BpfFsPath, $"detect-test-{Environment.ProcessId}-{Guid.NewGuid():N}");
        try
        {
            using var obj = OpenSelftest(-1);
            obj.Programs["selftest_fentry"].AutoLoad = false;
            obj.Load();
            var map = obj.Maps["selftest_by_tid"];
            map.Update(42u, 4242UL);
            var pin = Path.Combine(dir, "by_tid");
            map.Pin(pin);
            Assert.True(File.Exists(pin));
            using (var pinned = BpfMap.OpenPinned(pin))
            {
                Assert.Equal(BpfMapType.Hash, pinned.Type);
                Assert.Equal(4, pinned.KeySize);
                Assert.True(pinned.TryLookup(42u, out ulong v));
                Assert.Equal(4242UL, v);
                pinned.Update(43u, 1UL);
            }
            Assert.True(map.TryLookup(43u, out ulong v43));
            Assert.Equal(1UL, v43);
            Assert.True(map.Unpin(pin));
            Assert.False(File.Exists(pin));
        }
        finally
        {
            if (Directory.Exists(dir)) Directory.Delete(dir, recursive: true);
        }
        Assert.False(Directory.Exists(dir));
    }

    [Fact]
    public void Links_PinnedLink_SurvivesTheHandleUntilUnpinned()
    {
        using var obj = OpenSelftest(-1); // mounts bpffs when it is not
        var dir = Path.Combine(BpfSystem.BpfFsPath, $"detect-test-{Environment.ProcessId}-{Guid.NewGuid():N}");
        Directory.CreateDirectory(dir);
        try
        {
            obj.Programs["selftest_fentry"].AutoLoad = false;
            obj.Load();
            var link = obj.Programs["selftest_sys_exit"].Attach();
            var pin = Path.Combine(dir, "link");
            link.Pin(pin);
            using (var reopened = BpfLink.OpenPinned(pin))
            {
                Assert.True(reopened.Fd >= 0);
            }
            link.Unpin();
            Assert.False(File.Exists(pin));
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    [Fact]
    public void ReadOnlyData_UnknownVariableOrWrongSize_IsAClearError()
    {
        using var obj = OpenSelftest(-1);
        var e = Assert.Throws<BpfException>(() => obj.SetReadOnly("no_such_variable", 1u));
        Assert.Contains("no_such_variable", e.Message, StringComparison.Ordinal);
        e = Assert.Throws<BpfException>(() => obj.SetReadOnly("watch_tgid", 1UL));
        Assert.Contains("4 bytes", e.Message, StringComparison.Ordinal);
        obj.SetConfig(new SensorConfig { AgentTgid = 1 }); // the config struct fits detect_config
    }

    [Fact]
    public void Open_MissingFile_SaysWhichFile()
    {
        Needs.Root();
        var e = Assert.Throws<FileNotFoundException>(() => BpfObject.Open("/nonexistent/x.bpf.o"));
        Assert.Contains("/nonexistent/x.bpf.o", e.Message, StringComparison.Ordinal);
    }

    [StructLayout(LayoutKind.Sequential)]
    private struct SelftestEvent
    {
        public ulong Seq;
        public uint Tgid;
        public uint Nr;
    }

    private struct SeqChecker : IRingBufferHandler
    {
        public ulong Next;
        public int Pid;
        public int Bad;

        public void OnRecord(ReadOnlySpan<byte> record)
        {
            var e = MemoryMarshal.Read<SelftestEvent>(record);
            if (record.Length != 16 || e.Seq != Next || e.Tgid != Pid || e.Nr != Getppid) Bad++;
            Next++;
        }
    }

    [Fact]
    public void RingBuffer_Drain_HandsOverEveryRecordInOrder_AfterAWakeup()
    {
        using var child = Workload.StartGated(2000);
        using var obj = OpenSelftest(child.Pid);
        obj.Programs["selftest_fentry"].AutoLoad = false;
        obj.Load();
        obj.AttachAll();
        using var ring = new RingBufferReader(obj.Maps["selftest_events"]);
        using var poller = new RingBufferPoller();
        poller.Add(ring, 3);

        child.Go();
        child.WaitForExit();
        Assert.Equal(1UL << 3, poller.Wait(5000) & (1UL << 3));
        var checker = new SeqChecker { Pid = child.Pid };
        Assert.Equal(2000, ring.Drain(ref checker));
        Assert.Equal(0, checker.Bad);
        Assert.Equal(0UL, ring.PendingBytes);
        Assert.Equal(2000, ring.RecordsRead);
    }

    [Fact]
    public void RingBuffer_BatchEnumeration_SeesEveryRecordOnce_AcrossTheWrap()
    {
        using var obj = OpenSelftest(Environment.ProcessId);
        obj.Programs["selftest_fentry"].AutoLoad = false;
        obj.Load();
        obj.AttachAll();
        using var ring = new RingBufferReader(obj.Maps["selftest_events"]);
        ulong expected = 0;
        for (var round = 0; round < 3; round++)
        {
            // This process's own getppid calls: 1500 x 24 bytes per round, 3 rounds wrap the 64 KiB ring.
            for (var i = 0; i < 1500; i++) getppid();
            var seen = 0;
            var batch = ring.ReadBatch();
            foreach (var record in batch)
            {
                var e = MemoryMarshal.Read<SelftestEvent>(record);
                Assert.Equal((uint)Environment.ProcessId, e.Tgid);
                if (e.Seq != expected) Assert.Fail($"round {round}: record seq {e.Seq}, expected {expected}");
                expected++;
                seen++;
            }
            Assert.Equal(batch.Count, seen);
            ring.Release(batch);
            Assert.True(seen >= 1500, $"round {round}: {seen} records");
        }
    }

    [Fact]
    public async Task Poller_Interrupt_WakesAWaitingThread()
    {
        Needs.Root();
        using var poller = new RingBufferPoller();
        var ct = TestContext.Current.CancellationToken;
        var wait = Task.Run(() => poller.Wait(10_000), ct);
        await Task.Delay(50, ct);
        poller.Interrupt();
        var ready = await wait.WaitAsync(TimeSpan.FromSeconds(5), ct);
        Assert.Equal(1UL << 63, ready);
    }

    [DllImport("libc")]
    private static extern int getppid();
}
