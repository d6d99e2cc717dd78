using System.Net;
using System.Net.Sockets;
using Detect.Testing;

namespace Detect.Sensors.Tests;

/// <summary>
/// Traffic of known size between the two namespaces of a <see cref="NetNs"/>, made with sockets
/// this process opens inside them (so the owner of the client sockets is this process).
/// </summary>
internal readonly record struct TcpResult(int ClientPort, TcpInfo Client);

/// <summary>
/// The kernel's own counters of a TCP socket (struct tcp_info, getsockopt TCP_INFO): segments
/// counted after segmentation, so an independent reference even when TSO/GSO packets pass.
/// </summary>
internal readonly record struct TcpInfo(uint SegsOut, uint SegsIn, ulong BytesSent, ulong BytesReceived, ulong BytesRetrans)
{
    public static TcpInfo Read(Socket s)
    {
        var buffer = new byte[256];
        var n = s.GetRawSocketOption(6 /* IPPROTO_TCP */, 11 /* TCP_INFO */, buffer);
        if (n < 216) throw new InvalidOperationException($"TCP_INFO returned {n} bytes: this kernel is too old for the counters the test reads");
        var span = buffer.AsSpan();
        return new TcpInfo(
            BitConverter.ToUInt32(span[136..]), BitConverter.ToUInt32(span[140..]),
            BitConverter.ToUInt64(span[200..]), BitConverter.ToUInt64(span[128..]), BitConverter.ToUInt64(span[208..]));
    }
}

internal static class NetTraffic
{
    public static int FreePort() => Random.Shared.Next(20000, 60000);

    /// <summary>Listens in the server's namespace; the socket lives there whatever thread uses it.</summary>
    public static Socket Listen(NetNs.Side server, int port, bool v6 = false) => NetNs.Enter(server.Netns, () =>
    {
        var address = v6 ? server.Address6! : server.Address;
        var s = new Socket(address.AddressFamily, SocketType.Stream, ProtocolType.Tcp);
        s.SetSocketOption(SocketOptionLevel.Socket, SocketOptionName.ReuseAddress, true);
        s.Bind(new IPEndPoint(address, port));
        s.Listen(16);
        return s;
    });

    /// <summary>
    /// One TCP connection from <paramref name="client"/> to <paramref name="server"/>: the client
    /// sends <paramref name="up"/> bytes (in <paramref name="chunks"/> writes, <paramref name="pause"/>
    /// apart) and half-closes; the server reads to the end, sends <paramref name="down"/> bytes and
    /// closes; the client reads to the end and closes. An orderly close both ways (no RST).
    /// Returns the client's port and its socket's own TCP counters.
    /// </summary>
    public static TcpResult TcpExchange(NetNs.Side client, NetNs.Side server, int port, int up, int down, bool v6 = false, int chunks = 1, TimeSpan pause = default)
    {
        using var listener = Listen(server, port, v6);
        var serverDone = Task.Run(() =>
        {
            using var conn = listener.Accept();
            conn.ReceiveTimeout = 20_000;
            var received = ReadToEnd(conn);
            if (received != up) throw new InvalidOperationException($"server received {received} bytes, expected {up}");
            SendAll(conn, down);
            conn.Shutdown(SocketShutdown.Send);
            ReadToEnd(conn);
        });
        var target = v6 ? server.Address6! : server.Address;
        using var sock = NetNs.Enter(client.Netns, () => new Socket(target.AddressFamily, SocketType.Stream, ProtocolType.Tcp));
        sock.ReceiveTimeout = 20_000;
        sock.Connect(new IPEndPoint(target, port));
        var clientPort = ((IPEndPoint)sock.LocalEndPoint!).Port;
        var per = up / Math.Max(1, chunks);
        for (var i = 0; i < chunks; i++)
        {
            SendAll(sock, i == chunks - 1 ? up - per * (chunks - 1) : per);
            if (pause > TimeSpan.Zero && i < chunks - 1) Thread.Sleep(pause);
        }
        sock.Shutdown(SocketShutdown.Send);
        var got = ReadToEnd(sock);
        if (got != down) throw new InvalidOperationException($"client received {got} bytes, expected {down}");
        if (!serverDone.Wait(TimeSpan.FromSeconds(30))) throw new TimeoutException("the server side did not finish");
        serverDone.GetAwaiter().GetResult();
        var info = TcpInfo.Read(sock);
        sock.Close();
        return new TcpResult(clientPort, info);
    }

    /// <summary>Tries to connect within <paramref name="timeout"/>; true when the handshake completed.</summary>
    public static bool TryConnect(NetNs.Side client, IPAddress target, int port, TimeSpan timeout)
    {
        using var sock = NetNs.Enter(client.Netns, () => new Socket(target.AddressFamily, SocketType.Stream, ProtocolType.Tcp));
        using var cts = new CancellationTokenSource(timeout);
        try
        {
            sock.ConnectAsync(new IPEndPoint(target, port), cts.Token).AsTask().GetAwaiter().GetResult();
            return true;
        }
        catch (OperationCanceledException)
        {
            return false;
        }
        catch (SocketException)
        {
            return false;
        }
    }

    /// <summary>Accepts and closes connections on <paramref name="listener"/> until it is disposed.</summary>
    public static Task AcceptForever(Socket listener) => Task.Run(() =>
    {
        try
        {
            while (true) listener.Accept().Dispose();
        }
        catch (SocketException)
        {
        }
        catch (ObjectDisposedException)
        {
        }
    });

    public static void SendAll(Socket s, int count)
    {
        var buffer = new byte[64 * 1024];
        Random.Shared.NextBytes(buffer);
        while (count > 0)
        {
            var n = s.Send(buffer, 0, Math.Min(count, buffer.Length), SocketFlags.None);
            count -= n;
        }
    }

    public static long ReadToEnd(Socket s)
    {
        var buffer = new byte[64 * 1024];
        long total = 0;
        int n;
        while ((n = s.Receive(buffer)) > 0) total += n;
        return total;
    }
}
