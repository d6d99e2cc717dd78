using System.Diagnostics;
using Detect.Sensors.Bpf;
using Detect.Testing;

namespace Detect.Sensors.Tests;

/// <summary>
/// The file lock that serialises agents mounting bpffs/tracefs (BpfSystem.LockFile): a second
/// locker, in this process or another, waits its turn instead of failing with an IOException
/// (which File.OpenHandle's FileShare emulation threw while another process held the lock).
/// </summary>
public sealed class MountLockTests
{
    private static string TempLock() => Path.Combine(Path.GetTempPath(), $"detect-lock-test-{Guid.NewGuid():N}.lock");

    [Fact]
    public async Task LockFile_TwoLockersStartingTogether_BothGetItInTurn_AndNeverOverlap()
    {
        var path = TempLock();
        try
        {
            var inside = 0;
            var overlaps = 0;
            var turns = 0;
            using var start = new Barrier(2);
            var lockers = Enumerable.Range(0, 2).Select(_ => Task.Factory.StartNew(() =>
            {
                start.SignalAndWait();
                for (var i = 0; i < 20; i++)
                {
                    using (BpfSystem.LockFile(path))
                    {
                        if (Interlocked.Increment(ref inside) != 1) Interlocked.Increment(ref overlaps);
                        Thread.Sleep(2);
                        Interlocked.Decrement(ref inside);
                        Interlocked.Increment(ref turns);
                    }
                }
            }, TaskCreationOptions.LongRunning)).ToArray();
            await Task.WhenAll(lockers).WaitAsync(TimeSpan.FromSeconds(30), TestContext.Current.CancellationToken);
            Assert.Equal(40, turns);
            Assert.Equal(0, overlaps);
        }
        finally
        {
            File.Delete(path);
        }
    }

    [Fact]
    public void LockFile_HeldByAnotherProcess_WaitsUntilItIsReleased()
    {
        var flock = Needs.Program("flock"); // util-linux: holds an exclusive flock while its command runs
        var path = TempLock();
        try
        {
            var psi = new ProcessStartInfo(flock) { RedirectStandardOutput = true, UseShellExecute = false };
            foreach (var a in new[] { "-x", path, "sh", "-c", "echo held; sleep 1" }) psi.ArgumentList.Add(a);
            using var holder = Process.Start(psi)!;
            Assert.Equal("held", holder.StandardOutput.ReadLine());
            var waited = Stopwatch.StartNew();
            using (BpfSystem.LockFile(path))
            {
                waited.Stop();
                Assert.True(holder.HasExited || holder.WaitForExit(2000), "the lock is ours only once the other process let go");
                Assert.Equal(0, holder.ExitCode);
            }
            Assert.True(waited.Elapsed > TimeSpan.FromMilliseconds(300), $"waited {waited.Elapsed.TotalMilliseconds:F0} ms for the other process");
        }
        finally
        {
            File.Delete(path);
        }
    }
}
