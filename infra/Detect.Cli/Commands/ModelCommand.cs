using System.CommandLine;
using Detect.Models.Registry;

namespace Detect.Cli.Commands;

/// <summary>`detect model list|show|promote`: the versions of a model registry folder.</summary>
public sealed class ModelCommand : ICliCommand
{
    public Command Create()
    {
        var command = new Command("model", "Model registry: list versions, show a manifest, promote a version (a running scorer picks it up).");
        var registryOption = () => new Option<string>("--registry") { Description = "Registry folder (the --out of detect train)", Required = true };

        var listRegistry = registryOption();
        var list = new Command("list", "List the versions, the current one marked") { listRegistry };
        list.SetAction(parse =>
        {
            var registry = new ModelRegistry(parse.GetValue(listRegistry)!);
            var current = registry.Current;
            foreach (var v in registry.Versions)
            {
                var m = registry.Manifest(v);
                var auc = m.Evaluation.TryGetValue("auc", out var a) ? $" auc {a:F4}" : "";
                Console.WriteLine($"{(v == current ? "*" : " ")} {v}  {m.Detector,-8} {m.FeatureSchema,-10} created {m.CreatedUtc:u} threshold {m.Calibration.Threshold:G4}{auc}");
            }
            if (registry.Versions.Count == 0) Console.WriteLine($"no versions in {registry.Root}");
            return 0;
        });

        var showRegistry = registryOption();
        var showVersion = new Option<string?>("--version") { Description = "Version (default: the current one)" };
        var show = new Command("show", "Print a version's manifest.json") { showRegistry, showVersion };
        show.SetAction(parse =>
        {
            var registry = new ModelRegistry(parse.GetValue(showRegistry)!);
            var v = parse.GetValue(showVersion) ?? registry.Current;
            if (v == null)
            {
                Console.Error.WriteLine($"detect model show: {registry.Root} has no current version");
                return 2;
            }
            Console.WriteLine(registry.Manifest(v).ToJson());
            return 0;
        });

        var promoteRegistry = registryOption();
        var promoteVersion = new Option<string>("--version") { Description = "Version to make current", Required = true };
        var promote = new Command("promote", "Make a version current") { promoteRegistry, promoteVersion };
        promote.SetAction(parse =>
        {
            var registry = new ModelRegistry(parse.GetValue(promoteRegistry)!);
            try
            {
                registry.Promote(parse.GetValue(promoteVersion)!);
            }
            catch (DirectoryNotFoundException e)
            {
                Console.Error.WriteLine($"detect model promote: {e.Message}");
                return 2;
            }
            Console.WriteLine($"{registry.Root}: current is now {registry.Current}");
            return 0;
        });
        command.Subcommands.Add(list);
        command.Subcommands.Add(show);
        command.Subcommands.Add(promote);
        return command;
    }
}
