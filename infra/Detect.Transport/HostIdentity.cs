using System.Text;

namespace Detect.Transport;

/// <summary>The 64-bit host id every message carries (and Kafka partitions by).</summary>
public static class HostIdentity
{
    private static readonly Lazy<ulong> LocalLazy = new(ComputeLocal);

    /// <summary>This machine: a hash of /etc/machine-id (stable across reboots), else of the host name.</summary>
    public static ulong Local => LocalLazy.Value;

    /// <summary>The id of a host named <paramref name="name"/> (FNV-1a 64 of its UTF-8 bytes; never 0, which means "every host").</summary>
    public static ulong FromName(string name)
    {
        var hash = 0xcbf29ce484222325UL;
        foreach (var b in Encoding.UTF8.GetBytes(name))
        {
            hash ^= b;
            hash *= 0x100000001b3UL;
        }
        return hash == 0 ? 1 : hash;
    }

    private static ulong ComputeLocal()
    {
        foreach (var path in new[] { "/etc/machine-id", "/var/lib/dbus/machine-id" })
        {
            try
            {
                var id = File.ReadAllText(path).Trim();
                if (id.Length > 0) return FromName("machine-id:" + id);
            }
            catch (IOException)
            {
            }
            catch (UnauthorizedAccessException)
            {
            }
        }
        return FromName("hostname:" + Environment.MachineName);
    }
}
