using Xunit;
using Xunit.Sdk;

namespace Detect.Testing;

/// <summary>
/// Skips that print why. A test calls these first; where the machine really lacks the
/// capability the test is skipped with the reason, everywhere else it runs.
/// </summary>
public static class Needs
{
    /// <summary>Root (or CAP_BPF and CAP_SYS_ADMIN): loading and attaching BPF programs.</summary>
    public static void Root()
    {
        if (!Environment.IsPrivilegedProcess)
            Assert.Skip("needs root (CAP_BPF, CAP_SYS_ADMIN) to load BPF programs; run ./detect test as root");
    }

    /// <summary>The kernel's BTF, which CO-RE programs and tp_btf attach need.</summary>
    public static void KernelBtf()
    {
        Root();
        if (!File.Exists("/sys/kernel/btf/vmlinux"))
            Assert.Skip("needs kernel BTF (/sys/kernel/btf/vmlinux): this kernel was built without CONFIG_DEBUG_INFO_BTF");
    }

    /// <summary>../shared/data, present on developer and CI machines, absent in a user's fresh clone.</summary>
    public static string SharedData(string subfolder = "")
    {
        var data = Repo.SharedData;
        if (data == null)
            throw SkipException.ForSkip($"needs ../shared/data beside the checkout ({Path.GetFullPath(Path.Combine(Repo.Root, "..", "shared", "data"))} is absent)");
        var path = Path.Combine(data, subfolder);
        if (!Directory.Exists(path) && !File.Exists(path))
            Assert.Skip($"needs {path}, which this machine's ../shared/data does not hold");
        return path;
    }

    /// <summary>A program on PATH (iperf3, tcpreplay, ...).</summary>
    public static string Program(string name)
    {
        foreach (var dir in (Environment.GetEnvironmentVariable("PATH") ?? "").Split(':'))
        {
            if (dir.Length == 0) continue;
            var path = Path.Combine(dir, name);
            if (File.Exists(path)) return path;
        }
        foreach (var dir in new[] { "/usr/sbin", "/sbin", "/usr/bin" })
        {
            var path = Path.Combine(dir, name);
            if (File.Exists(path)) return path;
        }
        throw SkipException.ForSkip($"needs {name} on PATH (./detect installs it: apt-get install {name})");
    }
}
