[assembly: System.Runtime.CompilerServices.InternalsVisibleTo("Colo.Vm.Tests")]
