using System.Reflection;
using System.Runtime.InteropServices;

namespace Detect.Transport.Kafka;

/// <summary>
/// Loads the librdkafka that Confluent.Kafka ships, explicitly. The package's default
/// linux-x64 library needs libsasl2.so.3, which Debian 12 lacks; .NET then silently falls back
/// to any system librdkafka (Debian's 2.0.2 lacks entry points Confluent.Kafka 2.x calls). The
/// package's centos8 build has no such dependency, so every librdkafka P/Invoke of this process
/// (Confluent.Kafka's and the mock-cluster calls here) resolves to it. Call EnsureLoaded before
/// the first Confluent.Kafka client is built; every type in Detect.Transport.Kafka does.
/// Override with DETECT_LIBRDKAFKA=/path/to/librdkafka.so.
/// </summary>
public static partial class KafkaNative
{
    private const string Library = "librdkafka";
    private static readonly object Gate = new();
    private static IntPtr _handle;

    /// <summary>The file loaded, once EnsureLoaded ran.</summary>
    public static string? LoadedPath { get; private set; }

    public static void EnsureLoaded()
    {
        if (Volatile.Read(ref _handle) != IntPtr.Zero) return;
        lock (Gate)
        {
            if (_handle != IntPtr.Zero) return;
            var path = Find();
            var handle = NativeLibrary.Load(path);
            foreach (var assembly in new[] { typeof(Confluent.Kafka.Library).Assembly, typeof(KafkaNative).Assembly })
            {
                try
                {
                    NativeLibrary.SetDllImportResolver(assembly, Resolve);
                }
                catch (InvalidOperationException)
                {
                    // A resolver is already set for this assembly (someone loaded it before us): keep theirs.
                }
            }
            LoadedPath = path;
            Volatile.Write(ref _handle, handle);
        }
    }

    private static IntPtr Resolve(string name, Assembly assembly, DllImportSearchPath? searchPath) =>
        name.Contains("rdkafka", StringComparison.Ordinal) ? Volatile.Read(ref _handle) : IntPtr.Zero;

    /// <summary>The library file to load: DETECT_LIBRDKAFKA, else the package's build without libsasl2 next to the app, else in the NuGet cache.</summary>
    public static string Find()
    {
        if (Environment.GetEnvironmentVariable("DETECT_LIBRDKAFKA") is { Length: > 0 } env)
        {
            if (!File.Exists(env)) throw new DllNotFoundException($"DETECT_LIBRDKAFKA={env} does not exist");
            return env;
        }
        var rid = RuntimeInformation.ProcessArchitecture switch
        {
            Architecture.Arm64 => "linux-arm64",
            _ => "linux-x64",
        };
        // centos8-librdkafka.so: glibc build with SSL linked in and no libsasl2 dependency.
        string[] names = ["centos8-librdkafka.so", "librdkafka.so"];
        var dirs = new List<string>
        {
            Path.Combine(AppContext.BaseDirectory, "runtimes", rid, "native"),
            Path.Combine(Path.GetDirectoryName(typeof(Confluent.Kafka.Library).Assembly.Location) ?? ".", "runtimes", rid, "native"),
        };
        var nugetRoot = Environment.GetEnvironmentVariable("NUGET_PACKAGES") is { Length: > 0 } n
            ? n : Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".nuget", "packages");
        var redist = Path.Combine(nugetRoot, "librdkafka.redist");
        if (Directory.Exists(redist))
        {
            dirs.AddRange(Directory.GetDirectories(redist)
                .OrderByDescending(d => System.Version.TryParse(Path.GetFileName(d), out var v) ? v : new System.Version(0, 0))
                .Select(d => Path.Combine(d, "runtimes", rid, "native")));
        }
        foreach (var name in names)
        {
            foreach (var dir in dirs)
            {
                var path = Path.Combine(dir, name);
                if (File.Exists(path)) return path;
            }
        }
        throw new DllNotFoundException(
            $"librdkafka not found (looked for {string.Join(", ", names)} in {string.Join(", ", dirs)}); " +
            "restore the Confluent.Kafka package (dotnet build) or set DETECT_LIBRDKAFKA");
    }

    /// <summary>librdkafka's version string, e.g. "2.16.0".</summary>
    public static string Version()
    {
        EnsureLoaded();
        return Marshal.PtrToStringUTF8(rd_kafka_version_str()) ?? "?";
    }

    [LibraryImport(Library)]
    internal static partial IntPtr rd_kafka_version_str();

    [LibraryImport(Library)]
    internal static partial IntPtr rd_kafka_conf_new();

    [LibraryImport(Library, StringMarshalling = StringMarshalling.Utf8)]
    internal static unsafe partial int rd_kafka_conf_set(IntPtr conf, string name, string value, byte* errstr, nuint errstrSize);

    [LibraryImport(Library)]
    internal static partial void rd_kafka_conf_destroy(IntPtr conf);

    [LibraryImport(Library)]
    internal static unsafe partial IntPtr rd_kafka_new(int type, IntPtr conf, byte* errstr, nuint errstrSize);

    [LibraryImport(Library)]
    internal static partial void rd_kafka_destroy(IntPtr rk);

    [LibraryImport(Library)]
    internal static partial IntPtr rd_kafka_mock_cluster_new(IntPtr rk, int brokerCount);

    [LibraryImport(Library)]
    internal static partial void rd_kafka_mock_cluster_destroy(IntPtr mcluster);

    [LibraryImport(Library)]
    internal static partial IntPtr rd_kafka_mock_cluster_bootstraps(IntPtr mcluster);

    [LibraryImport(Library, StringMarshalling = StringMarshalling.Utf8)]
    internal static partial int rd_kafka_mock_topic_create(IntPtr mcluster, string topic, int partitions, int replicationFactor);

    [LibraryImport(Library)]
    internal static partial int rd_kafka_mock_broker_set_down(IntPtr mcluster, int brokerId);

    [LibraryImport(Library)]
    internal static partial int rd_kafka_mock_broker_set_up(IntPtr mcluster, int brokerId);

    [LibraryImport(Library)]
    internal static partial void rd_kafka_mock_group_initial_rebalance_delay_ms(IntPtr mcluster, int delayMs);

    [LibraryImport(Library)]
    internal static partial IntPtr rd_kafka_err2str(int err);
}
