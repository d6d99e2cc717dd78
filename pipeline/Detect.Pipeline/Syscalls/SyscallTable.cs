namespace Detect.Pipeline.Syscalls;

/// <summary>Syscall numbers as the pipeline sees them: x86-64 numbers below 512, and for replayed
/// i386 traces, surrogates 512 + i386 number for calls x86-64 does not have.</summary>
public static partial class SyscallTable
{
    /// <summary>Numbers the per-call tables cover; anything above counts as one "out of range" call.</summary>
    public const int Space = 1024;

    /// <summary>The x86-64 number of a name, or -1.</summary>
    public static int X8664(string name)
    {
        for (var i = 0; i < X8664Names.Length; i++)
            if (X8664Names[i] == name) return i;
        foreach (var (nr, n) in SurrogateNames)
            if (n == name) return nr;
        return -1;
    }

    /// <summary>The name of a number the pipeline uses (x86-64 or surrogate), or its number as text.</summary>
    public static string NameOf(int nr) =>
        nr >= 0 && nr < X8664Names.Length && X8664Names[nr] is { } n ? n
        : SurrogateNames.TryGetValue(nr, out var s) ? s
        : nr.ToString(System.Globalization.CultureInfo.InvariantCulture);

    /// <summary>Maps an i386 number (ADFA-LD) to the pipeline's numbering; -1 when the number is not an i386 syscall.</summary>
    public static int FromI386(int nr) => nr >= 0 && nr < I386ToX8664.Length ? I386ToX8664[nr] : -1;
}
