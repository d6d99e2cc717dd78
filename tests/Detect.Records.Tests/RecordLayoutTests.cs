using System.Diagnostics;
using System.Reflection;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Text.Json;
using Detect.Testing;

namespace Detect.Records.Tests;

/// <summary>
/// The C# mirrors against the compiled header: bpf/alignchecker.bpf.c declares one of every
/// struct, the build compiles it with BTF, and this test reads that BTF with bpftool and compares
/// every struct size, member offset and member size (the Tetragon alignchecker idea).
/// </summary>
public sealed class RecordLayoutTests
{
    private static readonly Type[] Mirrors = typeof(RecordHeader).Assembly.GetTypes()
        .Where(t => t.GetCustomAttribute<CStructAttribute>() != null)
        .OrderBy(t => t.Name)
        .ToArray();

    public static TheoryData<string> MirrorNames() => new(Mirrors.Select(t => t.Name));

    [Theory]
    [MemberData(nameof(MirrorNames))]
    public void Records_MatchTheCompiledHeader(string mirrorName)
    {
        var mirror = Mirrors.Single(t => t.Name == mirrorName);
        var cName = mirror.GetCustomAttribute<CStructAttribute>()!.Name;
        var btf = Btf.Value;
        Assert.True(btf.Structs.TryGetValue(cName, out var cStruct),
            $"struct {cName} is not in alignchecker.bpf.o: declare an instance of it in bpf/alignchecker.bpf.c");

        Assert.Equal(cStruct.Size, Marshal.SizeOf(mirror));
        Assert.Equal(cStruct.Size, (int)typeof(Unsafe).GetMethod(nameof(Unsafe.SizeOf))!.MakeGenericMethod(mirror).Invoke(null, null)!);
        var sizeConst = mirror.GetField("Size", BindingFlags.Public | BindingFlags.Static);
        if (sizeConst != null) Assert.Equal(cStruct.Size, (int)sizeConst.GetValue(null)!);

        var fields = mirror.GetFields(BindingFlags.Public | BindingFlags.Instance);
        var byCName = fields.ToDictionary(f => f.GetCustomAttribute<CNameAttribute>()?.Name ?? SnakeCase(f.Name));
        foreach (var member in cStruct.Members)
        {
            Assert.True(byCName.TryGetValue(member.Name, out var field), $"{cName}.{member.Name} has no C# field in {mirror.Name}");
            var offset = field.GetCustomAttribute<FieldOffsetAttribute>()?.Value;
            Assert.True(offset == member.Offset, $"{cName}.{member.Name}: C offset {member.Offset}, C# {mirror.Name}.{field.Name} at {offset}");
            var size = Marshal.SizeOf(field.FieldType.IsEnum ? Enum.GetUnderlyingType(field.FieldType) : field.FieldType);
            Assert.True(size == member.Size, $"{cName}.{member.Name}: C size {member.Size}, C# {mirror.Name}.{field.Name} has {size}");
        }
        Assert.Equal(cStruct.Members.Count, fields.Length);
    }

    [Fact]
    public void Records_EveryCStructHasAMirror()
    {
        var mirrored = Mirrors.Select(t => t.GetCustomAttribute<CStructAttribute>()!.Name).ToHashSet();
        var missing = Btf.Value.Structs.Keys.Where(n => n.StartsWith("detect_", StringComparison.Ordinal) && !mirrored.Contains(n)).ToList();
        Assert.True(missing.Count == 0, "C structs with no C# mirror: " + string.Join(", ", missing));
    }

    private static string SnakeCase(string pascal)
    {
        var sb = new System.Text.StringBuilder();
        for (var i = 0; i < pascal.Length; i++)
        {
            var c = pascal[i];
            if (char.IsUpper(c) && i > 0) sb.Append('_');
            sb.Append(char.ToLowerInvariant(c));
        }
        return sb.ToString();
    }

    private static readonly Lazy<BtfStructs> Btf = new(BtfStructs.Load);

    private sealed record BtfMember(string Name, int Offset, int Size);
    private sealed record BtfStruct(int Size, List<BtfMember> Members);

    private sealed class BtfStructs
    {
        public Dictionary<string, BtfStruct> Structs { get; } = new();

        public static BtfStructs Load()
        {
            var obj = Path.Combine(Repo.BpfBuild, "alignchecker.bpf.o");
            Assert.True(File.Exists(obj), $"{obj} is missing: the build compiles it (make -C bpf)");
            var psi = new ProcessStartInfo("bpftool", ["btf", "dump", "file", obj, "-j"]) { RedirectStandardOutput = true, RedirectStandardError = true };
            using var p = Process.Start(psi)!;
            var json = p.StandardOutput.ReadToEnd();
            p.WaitForExit();
            Assert.True(p.ExitCode == 0, "bpftool btf dump failed: " + p.StandardError.ReadToEnd());

            using var doc = JsonDocument.Parse(json);
            var types = new Dictionary<int, JsonElement>();
            foreach (var t in doc.RootElement.GetProperty("types").EnumerateArray())
                types[t.GetProperty("id").GetInt32()] = t.Clone();

            int SizeOf(int id)
            {
                var t = types[id];
                return t.GetProperty("kind").GetString() switch
                {
                    "TYPEDEF" or "VOLATILE" or "CONST" => SizeOf(t.GetProperty("type_id").GetInt32()),
                    "ARRAY" => t.GetProperty("nr_elems").GetInt32() * SizeOf(t.GetProperty("type_id").GetInt32()),
                    _ => t.GetProperty("size").GetInt32(),
                };
            }

            var result = new BtfStructs();
            foreach (var t in types.Values)
            {
                if (t.GetProperty("kind").GetString() != "STRUCT") continue;
                var name = t.GetProperty("name").GetString()!;
                var members = t.GetProperty("members").EnumerateArray()
                    .Select(m => new BtfMember(m.GetProperty("name").GetString()!, m.GetProperty("bits_offset").GetInt32() / 8, SizeOf(m.GetProperty("type_id").GetInt32())))
                    .ToList();
                result.Structs[name] = new BtfStruct(t.GetProperty("size").GetInt32(), members);
            }
            return result;
        }
    }
}
