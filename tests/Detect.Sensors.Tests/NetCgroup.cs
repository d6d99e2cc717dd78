using System.Diagnostics;
using Detect.Sensors.Bpf;
using Detect.Testing;

namespace Detect.Sensors.Tests;

/// <summary>
/// A child cgroup v2 directory made for one test (`detect-&lt;id&gt;` under the cgroup2 mount): the
/// only kind of cgroup tests attach programs to. Dispose moves any process left in it to the
/// parent and removes it.
/// </summary>
internal sealed class NetCgroup : IDisposable
{
    private NetCgroup(string path) => Path = path;

    public string Path { get; }

    public static NetCgroup Create()
    {
        Needs.Root();
        var root = CgroupTarget.V2Root();
        if (root == null) Assert.Skip("needs cgroup v2 (not mounted on this host)");
        var path = System.IO.Path.Combine(root, $"detect-{Random.Shared.Next():x8}");
        Directory.CreateDirectory(path);
        return new NetCgroup(path);
    }

    /// <summary>
    /// Starts `bash -c SCRIPT` inside namespace <paramref name="netns"/> (when given) and inside
    /// this cgroup: the shell moves itself in before it runs the script.
    /// </summary>
    public Process StartShell(string? netns, string script)
    {
        // Into the cgroup first: `ip netns exec` mounts a fresh /sys, which hides the cgroup
        // mount; membership survives the exec into the namespace.
        var psi = new ProcessStartInfo("bash") { RedirectStandardOutput = true, RedirectStandardError = true };
        psi.ArgumentList.Add("-c");
        psi.ArgumentList.Add(netns == null
            ? $"echo $$ > {Path}/cgroup.procs && {script}"
            : $"echo $$ > {Path}/cgroup.procs && exec ip netns exec {netns} bash -c \"$0\"");
        if (netns != null) psi.ArgumentList.Add(script);
        return Process.Start(psi)!;
    }

    public void Dispose()
    {
        try
        {
            var parent = System.IO.Path.GetDirectoryName(Path)!;
            foreach (var pid in File.ReadAllLines(System.IO.Path.Combine(Path, "cgroup.procs")))
            {
                try
                {
                    File.AppendAllText(System.IO.Path.Combine(parent, "cgroup.procs"), pid);
                }
                catch (IOException)
                {
                    // exited meanwhile
                }
            }
            Directory.Delete(Path);
        }
        catch (DirectoryNotFoundException)
        {
        }
    }
}
