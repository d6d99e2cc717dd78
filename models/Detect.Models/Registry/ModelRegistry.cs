using System.Globalization;
using Detect.Models.Training;

namespace Detect.Models.Registry;

/// <summary>
/// A model's versions on disk: `ROOT/v0001/`, `ROOT/v0002/`, ... (each manifest.json + model.zip)
/// and `ROOT/CURRENT`, one line naming the promoted version. Versions are written to a temporary
/// folder and renamed into place, and CURRENT is replaced by rename, so a reader never sees a
/// half-written version or pointer.
/// </summary>
public sealed class ModelRegistry
{
    public const string CurrentFile = "CURRENT";

    public ModelRegistry(string root)
    {
        ArgumentException.ThrowIfNullOrEmpty(root);
        Root = Path.GetFullPath(root);
    }

    public string Root { get; }
    public string Name => Path.GetFileName(Root.TrimEnd(Path.DirectorySeparatorChar));
    public string CurrentPath => Path.Combine(Root, CurrentFile);

    /// <summary>Saved versions, oldest first.</summary>
    public IReadOnlyList<string> Versions =>
        Directory.Exists(Root)
            ? Directory.GetDirectories(Root, "v*").Select(Path.GetFileName).OfType<string>()
                .Where(n => n.Length > 1 && int.TryParse(n.AsSpan(1), NumberStyles.None, CultureInfo.InvariantCulture, out _)
                            && File.Exists(Path.Combine(Root, n, DetectorModel.ManifestFile)))
                .OrderBy(n => int.Parse(n.AsSpan(1), CultureInfo.InvariantCulture)).ToList()
            : [];

    /// <summary>The promoted version, or null when none is.</summary>
    public string? Current
    {
        get
        {
            try
            {
                var v = File.Exists(CurrentPath) ? File.ReadAllText(CurrentPath).Trim() : "";
                return v.Length > 0 ? v : null;
            }
            catch (IOException)
            {
                return null; // being replaced right now; the next look sees the new one
            }
        }
    }

    public string VersionPath(string version) => Path.Combine(Root, version);

    /// <summary>Saves a model as the next version (not promoted) and returns the version name.</summary>
    public string Save(DetectorModel model)
    {
        ArgumentNullException.ThrowIfNull(model);
        Directory.CreateDirectory(Root);
        for (var attempt = 0; attempt < 100; attempt++)
        {
            var next = Versions.Count == 0 ? 1 : int.Parse(Versions[^1].AsSpan(1), CultureInfo.InvariantCulture) + 1;
            var version = $"v{next:D4}";
            var tmp = Path.Combine(Root, $".tmp-{version}-{Environment.ProcessId}-{Guid.NewGuid():N}");
            model.WithManifest(model.Manifest with { Name = Name, Version = version }).Save(tmp);
            try
            {
                Directory.Move(tmp, VersionPath(version));
                return version;
            }
            catch (IOException) when (Directory.Exists(VersionPath(version)))
            {
                Directory.Delete(tmp, recursive: true); // another trainer took this number; take the next
            }
        }
        throw new IOException($"could not allocate a version folder in {Root}");
    }

    /// <summary>Makes a version the current one (atomic replace of CURRENT).</summary>
    public void Promote(string version)
    {
        if (!File.Exists(Path.Combine(VersionPath(version), DetectorModel.ManifestFile)))
            throw new DirectoryNotFoundException($"registry {Root} has no version '{version}' (versions: {string.Join(", ", Versions)})");
        var tmp = CurrentPath + $".tmp-{Environment.ProcessId}-{Guid.NewGuid():N}";
        File.WriteAllText(tmp, version + "\n");
        File.Move(tmp, CurrentPath, overwrite: true);
    }

    public DetectorModel Load(string version)
    {
        var path = VersionPath(version);
        if (!Directory.Exists(path)) throw new DirectoryNotFoundException($"registry {Root} has no version '{version}' (versions: {string.Join(", ", Versions)})");
        return DetectorModel.Load(path);
    }

    public DetectorModel LoadCurrent() =>
        Load(Current ?? throw new InvalidOperationException($"registry {Root} has no promoted model ({CurrentFile} is missing); train one with `detect train` or promote a version with `detect model promote`"));

    public ModelManifest Manifest(string version) =>
        ModelManifest.FromJson(File.ReadAllText(Path.Combine(VersionPath(version), DetectorModel.ManifestFile)));

    /// <summary>Adds evaluation figures to a saved version's manifest (atomic replace).</summary>
    public void RecordEvaluation(string version, IReadOnlyDictionary<string, double> figures)
    {
        var manifest = Manifest(version);
        var merged = new Dictionary<string, double>(manifest.Evaluation);
        foreach (var (k, v) in figures) merged[k] = v;
        var path = Path.Combine(VersionPath(version), DetectorModel.ManifestFile);
        var tmp = path + ".tmp";
        File.WriteAllText(tmp, (manifest with { Evaluation = merged }).ToJson());
        File.Move(tmp, path, overwrite: true);
    }
}
