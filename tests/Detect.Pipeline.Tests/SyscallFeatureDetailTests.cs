using Detect.Pipeline.Features;
using Detect.Pipeline.Syscalls;

namespace Detect.Pipeline.Tests;

public class SyscallFeatureDetailTests
{
    private static ushort Nr(string name) => (ushort)SyscallTable.X8664(name);

    [Fact]
    public void HashedNgramFeature_IsToldAsTheWindowsCallsInItsBucket_MostFrequentFirst()
    {
        ushort read = Nr("read"), mmap = Nr("mmap"), close = Nr("close");
        ushort[] seq = [read, mmap, read, mmap, close, read, mmap];
        var pair = SyscallFamily.Bucket2((uint)(read << 10 | mmap));
        var detail = SyscallFeatureDetail.Describe($"f_ng2_{pair:D3}", seq);
        Assert.NotNull(detail);
        Assert.StartsWith("read→mmap ×3", detail, StringComparison.Ordinal);

        var triple = SyscallFamily.Bucket3((uint)(mmap << 20 | close << 10 | read));
        Assert.Contains("mmap→close→read ×1", SyscallFeatureDetail.Describe($"f_ng3_{triple:D3}", seq), StringComparison.Ordinal);

        Assert.Null(SyscallFeatureDetail.Describe("f_sc_read", seq));                       // not a hashed feature
        var empty = Enumerable.Range(0, 128).First(b => b != pair && b != SyscallFamily.Bucket2((uint)(mmap << 10 | read))
            && b != SyscallFamily.Bucket2((uint)(mmap << 10 | close)) && b != SyscallFamily.Bucket2((uint)(close << 10 | read)));
        Assert.Null(SyscallFeatureDetail.Describe($"f_ng2_{empty:D3}", seq));              // no pair of this window there
    }
}
