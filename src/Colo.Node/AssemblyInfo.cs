[assembly: System.Runtime.CompilerServices.InternalsVisibleTo("Colo.Integration.Tests")]
[assembly: System.Runtime.CompilerServices.InternalsVisibleTo("Colo.Node.Tests")]
[assembly: System.Runtime.CompilerServices.InternalsVisibleTo("Colo.Disk.Bench")]
