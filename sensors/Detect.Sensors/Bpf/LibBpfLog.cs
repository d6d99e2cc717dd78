using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using Detect.Sensors.Bpf.Native;

namespace Detect.Sensors.Bpf;

/// <summary>libbpf's print levels (enum libbpf_print_level).</summary>
public enum LibBpfLogLevel
{
    Warning = 0,
    Info = 1,
    Debug = 2,
}

/// <summary>
/// libbpf's messages (libbpf_set_print). libbpf prints synchronously on the thread that called
/// it, so <see cref="Capture"/> collects what one loader call printed (the kernel's reason for
/// refusing a program, the verifier log) for the error that names the program. Messages that
/// no capture takes go to <see cref="Sink"/> (warnings to stderr by default).
/// </summary>
public static unsafe class LibBpfLog
{
    private static int _installed;

    [ThreadStatic] private static List<LibBpfMessage>? _capture;

    /// <summary>Where uncaptured messages go; null drops them. Debug messages are dropped unless <see cref="Verbose"/>.</summary>
    public static Action<LibBpfLogLevel, string>? Sink { get; set; } = (level, text) =>
    {
        if (level == LibBpfLogLevel.Warning) Console.Error.Write("libbpf: " + text);
    };

    /// <summary>Pass libbpf's debug messages on as well (very chatty).</summary>
    public static bool Verbose { get; set; }

    internal static void Install()
    {
        if (Interlocked.Exchange(ref _installed, 1) != 0) return;
        LibBpf.libbpf_set_print(&Print);
    }

    /// <summary>Collects, on this thread, every message libbpf prints until the scope is disposed.</summary>
    internal static CaptureScope Capture()
    {
        Install();
        var previous = _capture;
        _capture = new List<LibBpfMessage>();
        return new CaptureScope(_capture, previous);
    }

    internal readonly struct CaptureScope(List<LibBpfMessage> messages, List<LibBpfMessage>? previous) : IDisposable
    {
        public List<LibBpfMessage> Messages { get; } = messages;

        public void Dispose()
        {
            _capture = previous;
            previous?.AddRange(Messages);
        }
    }

    [UnmanagedCallersOnly(CallConvs = [typeof(CallConvCdecl)])]
    private static int Print(int level, byte* format, nint args)
    {
        try
        {
            var lvl = (LibBpfLogLevel)level;
            var capture = _capture;
            if (capture == null && (Sink == null || (lvl == LibBpfLogLevel.Debug && !Verbose))) return 0;
            // A va_list can be consumed once: format into a large buffer (the verifier log
            // arrives as one %s); longer messages are cut and say so.
            const int size = 1 << 16;
            var buffer = (byte*)NativeMemory.Alloc(size);
            try
            {
                var n = Libc.vsnprintf(buffer, size, format, args);
                if (n < 0) return 0;
                var text = Marshal.PtrToStringUTF8((nint)buffer, Math.Min(n, size - 1));
                if (n >= size) text += "\n[message cut at 64 KiB]\n";
                if (capture != null) capture.Add(new LibBpfMessage(lvl, text));
                else if (lvl != LibBpfLogLevel.Debug || Verbose) Sink?.Invoke(lvl, text);
            }
            finally
            {
                NativeMemory.Free(buffer);
            }
        }
        catch
        {
            // Never let an exception cross into native code.
        }
        return 0;
    }
}

/// <summary>One message libbpf printed.</summary>
public readonly record struct LibBpfMessage(LibBpfLogLevel Level, string Text);
