using System.Diagnostics;
using Confluent.Kafka;
using Detect.Testing;
using Detect.Transport.Kafka;

namespace Detect.Transport.Tests;

/// <summary>`./detect broker` as a user runs it: a separate process, an address file, the project's topics, a clean stop.</summary>
public sealed class BrokerCommandTests
{
    [Fact]
    public async Task BrokerCommand_WritesItsAddressServesTheTopicsAndStopsOnSigterm()
    {
        string cli;
        try
        {
            cli = Repo.CliDll;
        }
        catch (FileNotFoundException e)
        {
            Assert.Skip($"{e.Message} (./detect test builds it)");
            return;
        }
        var file = Path.Combine(Path.GetTempPath(), $"detect-broker-test-{Guid.NewGuid():N}.address");
        var psi = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (var a in new[] { cli, "broker", "--address-file", file, "--partitions", "3" }) psi.ArgumentList.Add(a);
        using var process = Process.Start(psi)!;
        try
        {
            var printed = await process.StandardOutput.ReadLineAsync(TestContext.Current.CancellationToken).AsTask()
                .WaitAsync(TimeSpan.FromSeconds(60), TestContext.Current.CancellationToken);
            Assert.Matches(@"^127\.0\.0\.1:\d+$", printed);
            Assert.Equal(printed + "\n", File.ReadAllText(file));

            // Another process finds it through the file, as --kafka @FILE does, and sees every topic.
            var options = KafkaOptions.Parse("@" + file);
            Assert.Equal(printed, options.BootstrapServers);
            KafkaNative.EnsureLoaded();
            using var admin = new AdminClientBuilder(new AdminClientConfig { BootstrapServers = options.BootstrapServers }).Build();
            var topics = admin.GetMetadata(TimeSpan.FromSeconds(10)).Topics.ToDictionary(t => t.Topic, t => t.Partitions.Count);
            Assert.Equal(3, topics["detect.syscalls"]);
            Assert.True(topics.ContainsKey("detect.dead-letters"));
        }
        finally
        {
            if (!process.HasExited) Process.Start("kill", ["-TERM", process.Id.ToString(System.Globalization.CultureInfo.InvariantCulture)])!.WaitForExit();
            await process.WaitForExitAsync(TestContext.Current.CancellationToken).WaitAsync(TimeSpan.FromSeconds(20), TestContext.Current.CancellationToken);
        }
        Assert.Equal(0, process.ExitCode);
        Assert.False(File.Exists(file), "the address file outlived the broker");
    }
}
